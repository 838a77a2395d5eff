"""Administration: the ``flask smart ...`` commands (:mod:`.cli`) and ``flask init-db`` (:mod:`.schema`)."""

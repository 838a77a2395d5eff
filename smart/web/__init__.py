"""The pages and endpoints of the ``smart`` blueprint (:mod:`.routes`), the login rules (:mod:`.login`)
and the consent page's patient picker (:mod:`.picker`, whose patients come from a registered directory)."""

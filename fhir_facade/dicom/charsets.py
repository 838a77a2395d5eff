"""Repairs for person names a PACS decoded wrongly from ISO 2022 character sets (PS3.5 Section 6.1.2.5).

Orthanc 1.10 decodes ``ISO 2022 IR 13\\ISO 2022 IR 87`` (JIS X 0201 + JIS X 0208) names by
dropping the escape sequences, leaving the JIS X 0208 bytes as 7-bit ASCII: ``山田`` comes
back as ``;3ED``. Those bytes are still all there, so the name can be decoded again.
"""
from __future__ import annotations

import re

_SEVEN_BIT = re.compile(r"[\x21-\x7e]*")
JIS_X_0208 = "ISO 2022 IR 87"
JIS_X_0201 = "ISO 2022 IR 13"


def _decode_jis(run: str) -> str | None:
    if not run or len(run) % 2 or not _SEVEN_BIT.fullmatch(run):
        return None
    try:
        text = (b"\x1b$B" + run.encode("ascii") + b"\x1b(B").decode("iso2022_jp")
    except UnicodeDecodeError:
        return None
    return text if all(ord(c) > 0x7F for c in text) else None


def repair_jis_group(group: str) -> str:
    """Decode a PN component group whose JIS X 0208 bytes arrived as ASCII.

    Components are split on ``^`` only where a ``^`` stands between two-byte characters
    (an even number of bytes before and after it), since ``^`` (0x5E) is also a valid
    JIS X 0208 byte. Returns *group* unchanged unless every component decodes.

    Parameters
    ----------
    group : str
        One PN component group (Ideographic or Phonetic), e.g. ``;3ED^B@O:``.

    Returns
    -------
    str
        ``山田^太郎`` for the example, else *group*.
    """
    components, current, i = [], "", 0
    while i < len(group):
        if group[i] == "^" and len(current) % 2 == 0 and (len(group) - i - 1) % 2 == 0:
            components.append(current)
            current = ""
            i += 1
            continue
        current += group[i:i + 2]
        i += 2
    components.append(current)
    decoded = []
    for component in components:
        if component == "":
            decoded.append("")
            continue
        text = _decode_jis(component)
        if text is None:
            return group
        decoded.append(text)
    return "^".join(decoded)


def repair_person_name(pn: object, character_sets: list[str]) -> object:
    """Repair the Ideographic and Phonetic groups of a DICOM JSON PN value (PS3.18 F.2.2).

    Only for the combination the PACS mishandles — JIS X 0201 as the default set with
    JIS X 0208 extensions (``ISO 2022 IR 13\\ISO 2022 IR 87``, PS3.3 C.12.1.1.2) — and only
    for a group that is entirely 7-bit, which a correctly decoded Japanese group never is.
    A group that does not decode completely is left as it is.
    """
    if not isinstance(pn, dict) or JIS_X_0208 not in character_sets or JIS_X_0201 not in character_sets:
        return pn
    repaired = dict(pn)
    for group in ("Ideographic", "Phonetic"):
        value = pn.get(group)
        if isinstance(value, str) and value and _SEVEN_BIT.fullmatch(value.replace(" ", "")):
            repaired[group] = repair_jis_group(value)
    return repaired

"""Code tables the DICOM -> FHIR mapping looks up: coding schemes, body parts, laterality, sex.

Every table here transcribes a table of a standard; the comment above each names it.
SNOMED CT codes are from the **SNOMED CT International Edition** (the edition DICOM
licenses and references, ``http://snomed.info/sct`` with no module/version given), with
the Code Meanings DICOM PS3.16 gives them. ``tests/test_mapping.py`` checks every code
and meaning against the DICOM concept tables bundled with pydicom (generated from
PS3.16), so a typo in a code fails a test.
"""
from __future__ import annotations

DCM = "http://dicom.nema.org/resources/ontology/DCM"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"

#: DICOM Coding Scheme Designator -> FHIR ``Coding.system`` (PS3.16 Section 8
#: "Coding Schemes", Table 8-1; FHIR R4 §4.2 "Code Systems" / terminology.hl7.org URIs).
CODING_SCHEMES = {
    "DCM": DCM,
    "SCT": SNOMED,
    "SRT": SNOMED,  # retired SNOMED RT designator; PS3.16 maps its codes to SCT
    "LN": LOINC,
    "RADLEX": "http://radlex.org",
    "UCUM": "http://unitsofmeasure.org",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "I9C": "http://hl7.org/fhir/sid/icd-9-cm",
    "ICD10CM": "http://hl7.org/fhir/sid/icd-10-cm",
    "NCIt": "http://ncithesaurus-stage.nci.nih.gov",
    "UMLS": "http://www.nlm.nih.gov/research/umls",
}

#: Laterality (0020,0060) enumerated values -> SNOMED CT (PS3.3 C.7.3.1.1.4 values;
#: codes and meanings of PS3.16 CID 244 "Laterality").
LATERALITY = {
    "R": ("24028007", "Right"),
    "L": ("7771000", "Left"),
    "B": ("51440002", "Bilateral"),
}

#: Body Part Examined (0018,0015) defined terms -> SNOMED CT (PS3.16 Annex L
#: "Correspondence of Anatomic Region Codes and Body Part Examined Defined Terms";
#: code meanings as in PS3.16 CID 4031 "Common Anatomic Regions").
#: Terms not listed keep their text and get no code (never a guessed code).
BODY_PART = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "ABDOMENPELVIS": ("818982008", "Abdomen and Pelvis"),
    "ANKLE": ("70258002", "Ankle joint"),
    "BRAIN": ("12738006", "Brain"),
    "BREAST": ("76752008", "Breast"),
    "CHEST": ("816094009", "Chest"),
    "CHESTABDOMEN": ("416550000", "Chest and Abdomen"),
    "CSPINE": ("122494005", "Cervical spine"),
    "ELBOW": ("16953009", "Elbow joint"),
    "EXTREMITY": ("66019005", "Extremity"),
    "FOOT": ("56459004", "Foot"),
    "HAND": ("85562004", "Hand"),
    "HEAD": ("69536005", "Head"),
    "HEADNECK": ("774007", "Head and Neck"),
    "HEART": ("80891009", "Heart"),
    "HIP": ("24136001", "Hip joint"),
    "KIDNEY": ("64033007", "Kidney"),
    "KNEE": ("72696002", "Knee"),
    "LIVER": ("10200004", "Liver"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "LUNG": ("39607008", "Lung"),
    "NECK": ("45048000", "Neck"),
    "PELVIS": ("816092008", "Pelvis"),
    "PROSTATE": ("41216001", "Prostate"),
    "SHOULDER": ("16982005", "Shoulder"),
    "SKULL": ("89546000", "Skull"),
    "SPINE": ("421060004", "Spine"),
    "TSPINE": ("122495006", "Thoracic spine"),
    "WHOLEBODY": ("38266002", "Entire body"),
    "WRIST": ("74670003", "Wrist joint"),
}

#: Patient's Sex (0010,0040) enumerated values (PS3.3 C.7.1.1) -> FHIR R4
#: AdministrativeGender (http://hl7.org/fhir/administrative-gender). Any other value
#: present in the data maps to ``unknown``.
GENDER = {"M": "male", "F": "female", "O": "other"}

"""Full country names, as TensorDock writes them ("United States", "Czech Republic"), to the
ISO 3166-1 alpha-2 codes Vast.ai's offers carry, so ``--country US,CA`` means the same
everywhere. Names are compared in lower case with punctuation dropped."""

from __future__ import annotations

import re

_CODES: dict[str, str] = {
    "argentina": "AR",
    "australia": "AU",
    "austria": "AT",
    "bahrain": "BH",
    "belgium": "BE",
    "brazil": "BR",
    "bulgaria": "BG",
    "canada": "CA",
    "chile": "CL",
    "china": "CN",
    "colombia": "CO",
    "croatia": "HR",
    "cyprus": "CY",
    "czech republic": "CZ",
    "czechia": "CZ",
    "denmark": "DK",
    "estonia": "EE",
    "finland": "FI",
    "france": "FR",
    "germany": "DE",
    "greece": "GR",
    "hong kong": "HK",
    "hungary": "HU",
    "iceland": "IS",
    "india": "IN",
    "indonesia": "ID",
    "ireland": "IE",
    "israel": "IL",
    "italy": "IT",
    "japan": "JP",
    "kazakhstan": "KZ",
    "latvia": "LV",
    "lithuania": "LT",
    "luxembourg": "LU",
    "malaysia": "MY",
    "mexico": "MX",
    "moldova": "MD",
    "netherlands": "NL",
    "the netherlands": "NL",
    "new zealand": "NZ",
    "norway": "NO",
    "philippines": "PH",
    "poland": "PL",
    "portugal": "PT",
    "romania": "RO",
    "russia": "RU",
    "russian federation": "RU",
    "saudi arabia": "SA",
    "serbia": "RS",
    "singapore": "SG",
    "slovakia": "SK",
    "slovenia": "SI",
    "south africa": "ZA",
    "south korea": "KR",
    "korea": "KR",
    "republic of korea": "KR",
    "spain": "ES",
    "sweden": "SE",
    "switzerland": "CH",
    "taiwan": "TW",
    "thailand": "TH",
    "turkey": "TR",
    "turkiye": "TR",
    "ukraine": "UA",
    "united arab emirates": "AE",
    "uae": "AE",
    "united kingdom": "GB",
    "great britain": "GB",
    "uk": "GB",
    "united states": "US",
    "united states of america": "US",
    "usa": "US",
    "vietnam": "VN",
    "viet nam": "VN",
}


def iso_code(country: str | None) -> str | None:
    """ "United States" -> "US"; a two-letter code passes through; unknown names are None.

    >>> iso_code("Czech Republic"), iso_code("de"), iso_code("Atlantis")
    ('CZ', 'DE', None)
    """
    if not country:
        return None
    name = re.sub(r"[^a-z ]", "", country.strip().lower())
    name = re.sub(r"\s+", " ", name).strip()
    if name in _CODES:
        return _CODES[name]
    if len(name) == 2 and name.isalpha():
        return name.upper()
    return None

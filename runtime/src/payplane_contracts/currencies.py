"""ISO 4217 currencies and their minor-unit exponents: the only currencies payplane accepts.

Amounts everywhere are integer minor units of one of these (cents for EUR, yen for JPY, fils for KWD).
Funds codes, precious metals and testing codes (XAU, XTS, XXX, …) are deliberately absent: nobody pays
in them. Shared by the operator (a rail's currency is validated at admission) and the runtime.
"""

from typing import Final

_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_TWO_DECIMALS = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF "
    "CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF "
    "IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR "
    "MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD "
    "SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR "
    "ZMW ZWG"
)

MINOR_UNIT_EXPONENT: Final[dict[str, int]] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}


class UnknownCurrencyError(ValueError):
    def __init__(self, code: object) -> None:
        super().__init__(f"{code!r} is not an ISO 4217 currency code payplane accepts (e.g. 'EUR', 'USD', 'JPY')")
        self.code = code


def exponent(code: str) -> int:
    """Digits after the decimal point in ``code``'s major unit (2 for EUR, 0 for JPY, 3 for KWD)."""
    try:
        return MINOR_UNIT_EXPONENT[code]
    except KeyError:
        raise UnknownCurrencyError(code) from None


def is_known(code: object) -> bool:
    return isinstance(code, str) and code in MINOR_UNIT_EXPONENT

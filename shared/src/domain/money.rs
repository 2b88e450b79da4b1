//! Money: ISO 4217 currencies with their minor units, and exact decimal amounts.
//!
//! Amounts never touch floating point: on the wire they are JSON strings (`"10.50"`), here
//! they are checked digit by digit and kept as text, and Postgres (`numeric`) does every sum
//! and comparison. An amount has at most [`MAX_INTEGER_DIGITS`] digits before the point and at
//! most as many after it as its currency's minor units (JPY 0, USD 2, KWD 3, CLF 4): a value
//! with more decimal places than its currency has is refused, never rounded.

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};

use super::Invalid;

/// Most digits before the decimal point (balances stay below 10^15, `numeric(19, 4)`).
pub const MAX_INTEGER_DIGITS: usize = 15;
/// Most digits after it (the largest minor unit of ISO 4217: CLF, UYW).
pub const MAX_DECIMAL_PLACES: usize = 4;
/// JSON Schema pattern of an amount that is not negative.
pub const UNSIGNED_AMOUNT_PATTERN: &str = r"^[0-9]{1,15}(\.[0-9]{1,4})?$";
/// JSON Schema pattern of an amount that may be negative.
pub const SIGNED_AMOUNT_PATTERN: &str = r"^-?[0-9]{1,15}(\.[0-9]{1,4})?$";

/// ISO 4217 codes in use, with their minor units (decimal places).
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLF", 4),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYI", 0),
    ("UYU", 2),
    ("UYW", 4),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// A currency Comet knows: an ISO 4217 code and its minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Currency {
    code: &'static str,
    minor_units: u8,
}

impl Currency {
    /// Parses an ISO 4217 code as sent (three upper-case letters, one of [`Currency::codes`]).
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        CURRENCIES
            .iter()
            .find(|(code, _)| *code == raw)
            .map(|&(code, minor_units)| Self { code, minor_units })
            .ok_or_else(|| {
                Invalid::new("must be an ISO 4217 currency code Comet knows (e.g. USD, EUR, JPY)")
            })
    }

    /// The code (`USD`).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Decimal places of its amounts (USD 2).
    pub fn minor_units(&self) -> u8 {
        self.minor_units
    }

    /// Every code Comet knows, sorted.
    pub fn codes() -> impl Iterator<Item = &'static str> {
        CURRENCIES.iter().map(|(code, _)| *code)
    }
}

impl PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An ISO 4217 currency code; its minor units bound the decimal places of the \
                 bucket's amounts (JPY 0, USD 2, KWD 3, CLF 4).",
            ))
            .enum_values(Some(Self::codes()))
            .into()
    }
}

impl ToSchema for Currency {}

/// Which signs an amount may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    /// Greater than zero (a movement's amount).
    Positive,
    /// Zero or more (a threshold, a margin).
    NonNegative,
    /// Any (an initial balance).
    Any,
}

/// An exact decimal amount as text: an optional `-`, 1 to [`MAX_INTEGER_DIGITS`] digits, and
/// optionally `.` with 1 to [`MAX_DECIMAL_PLACES`] digits. Kept as sent but for leading zeros;
/// cast to `numeric` by the SQL that uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    negative: bool,
    integer: String,
    fraction: String,
}

impl Amount {
    /// Parses an amount (see the type's docs) with the signs `sign` allows.
    pub fn parse(raw: &str, sign: Sign) -> Result<Self, Invalid> {
        let shape = || {
            Invalid::new(format!(
                "must be a decimal number as a string, e.g. \"10.50\" (at most \
                 {MAX_INTEGER_DIGITS} digits before the point and {MAX_DECIMAL_PLACES} after, no \
                 exponent, no spaces)"
            ))
        };
        let (negative, digits) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let (integer, fraction) = match digits.split_once('.') {
            Some((i, f)) if !f.is_empty() => (i, f),
            Some(_) => return Err(shape()),
            None => (digits, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if integer.is_empty()
            || integer.len() > MAX_INTEGER_DIGITS
            || fraction.len() > MAX_DECIMAL_PLACES
            || !all_digits(integer)
            || !all_digits(fraction)
        {
            return Err(shape());
        }
        let zero = integer.bytes().chain(fraction.bytes()).all(|b| b == b'0');
        match sign {
            Sign::Positive if negative || zero => {
                return Err(Invalid::new("must be greater than zero"));
            }
            Sign::NonNegative if negative && !zero => {
                return Err(Invalid::new("must not be negative"));
            }
            Sign::Positive | Sign::NonNegative if negative => return Err(shape()),
            _ => {}
        }
        let trimmed = integer.trim_start_matches('0');
        Ok(Self {
            negative: negative && !zero,
            integer: if trimmed.is_empty() { "0" } else { trimmed }.to_owned(),
            fraction: fraction.to_owned(),
        })
    }

    /// Checks that the amount has no more decimal places than `currency` allows.
    pub fn fits(&self, currency: Currency) -> Result<(), Invalid> {
        let places = self.fraction.len();
        if places > usize::from(currency.minor_units()) {
            return Err(Invalid::new(format!(
                "has {places} decimal places; {} allows at most {}",
                currency.code(),
                currency.minor_units()
            )));
        }
        Ok(())
    }

    /// Whether it is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The same amount with the other sign (a debit's change to the balance).
    pub fn negated(&self) -> Self {
        Self {
            negative: !self.negative && !self.is_zero(),
            ..self.clone()
        }
    }

    fn is_zero(&self) -> bool {
        self.integer == "0" && self.fraction.bytes().all(|b| b == b'0')
    }

    /// The amount as Postgres `numeric` input (`-12.5`).
    pub fn to_sql(&self) -> String {
        let sign = if self.negative { "-" } else { "" };
        if self.fraction.is_empty() {
            format!("{sign}{}", self.integer)
        } else {
            format!("{sign}{}.{}", self.integer, self.fraction)
        }
    }
}

/// The OpenAPI schema of an amount that is not negative: `#[schema(value_type = UnsignedAmount)]`.
pub struct UnsignedAmount;

impl PartialSchema for UnsignedAmount {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An exact decimal as a string (`\"10.50\"`): at most 15 digits before the \
                 point and no more after it than the currency's minor units.",
            ))
            .pattern(Some(UNSIGNED_AMOUNT_PATTERN))
            .into()
    }
}

impl ToSchema for UnsignedAmount {}

/// The OpenAPI schema of an amount that may be negative: `#[schema(value_type = SignedAmount)]`.
pub struct SignedAmount;

impl PartialSchema for SignedAmount {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An exact decimal as a string, optionally negative (`\"-10.50\"`): at most 15 \
                 digits before the point and no more after it than the currency's minor units.",
            ))
            .pattern(Some(SIGNED_AMOUNT_PATTERN))
            .into()
    }
}

impl ToSchema for SignedAmount {}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd() -> Currency {
        Currency::parse("USD").unwrap()
    }

    #[test]
    fn currencies_are_known_by_code_with_their_minor_units() {
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(usd().minor_units(), 2);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        assert_eq!(Currency::parse("CLF").unwrap().minor_units(), 4);
        for bad in ["usd", "XXX", "US", "USDD", "", "US\0"] {
            assert!(Currency::parse(bad).is_err(), "{bad:?}");
        }
        let codes: Vec<_> = Currency::codes().collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted, "sorted, no duplicate");
        assert!(
            CURRENCIES
                .iter()
                .all(|(_, m)| usize::from(*m) <= MAX_DECIMAL_PLACES)
        );
    }

    #[test]
    fn amounts_are_exact_decimal_strings() {
        let a = Amount::parse("0010.50", Sign::Positive).unwrap();
        assert_eq!(a.to_sql(), "10.50");
        assert_eq!(a.negated().to_sql(), "-10.50");
        assert_eq!(
            Amount::parse("-3", Sign::Any).unwrap().to_sql(),
            "-3",
            "signed"
        );
        assert_eq!(Amount::parse("-0.00", Sign::Any).unwrap().to_sql(), "0.00");
        assert_eq!(
            Amount::parse("999999999999999.9999", Sign::Any)
                .unwrap()
                .to_sql(),
            "999999999999999.9999"
        );
        for bad in [
            "",
            "-",
            ".5",
            "5.",
            "1e3",
            "1.2.3",
            " 1",
            "1 ",
            "+1",
            "1,5",
            "0x10",
            "1\0",
            "1000000000000000",
            "1.23456",
            "NaN",
            "Infinity",
            "١",
        ] {
            assert!(Amount::parse(bad, Sign::Any).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signs_are_checked() {
        assert_eq!(
            Amount::parse("0", Sign::Positive).unwrap_err().message(),
            "must be greater than zero"
        );
        assert!(Amount::parse("-1", Sign::Positive).is_err());
        assert!(Amount::parse("0.00", Sign::NonNegative).is_ok());
        assert_eq!(
            Amount::parse("-1", Sign::NonNegative)
                .unwrap_err()
                .message(),
            "must not be negative"
        );
        assert!(Amount::parse("-1", Sign::Any).unwrap().is_negative());
    }

    #[test]
    fn decimal_places_are_bounded_by_the_currency() {
        let a = Amount::parse("1.234", Sign::Positive).unwrap();
        assert_eq!(
            a.fits(usd()).unwrap_err().message(),
            "has 3 decimal places; USD allows at most 2"
        );
        assert!(a.fits(Currency::parse("KWD").unwrap()).is_ok());
        let yen = Currency::parse("JPY").unwrap();
        assert!(
            Amount::parse("100", Sign::Positive)
                .unwrap()
                .fits(yen)
                .is_ok()
        );
        assert!(
            Amount::parse("100.0", Sign::Positive)
                .unwrap()
                .fits(yen)
                .is_err()
        );
    }
}

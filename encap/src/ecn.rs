//! ECN handling at tunnel endpoints (RFC 6040).

use crate::DropReason;

pub const NOT_ECT: u8 = 0b00;
pub const ECT1: u8 = 0b01;
pub const ECT0: u8 = 0b10;
pub const CE: u8 = 0b11;

/// How the encapsulator sets the outer ECN field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum EcnMode {
    /// Normal mode: the outer field is a copy of the inner one.
    #[default]
    Normal,
    /// Compatibility mode: the outer field is always Not-ECT.
    Compat,
}

/// Outer ECN for an inner ECN value.
#[inline(always)]
pub const fn encap(mode: EcnMode, inner: u8) -> u8 {
    match mode {
        EcnMode::Normal => inner & 3,
        EcnMode::Compat => NOT_ECT,
    }
}

/// The inner ECN value after decapsulation (RFC 6040 section 4.2, figure 4), or
/// the drop the RFC requires for CE arriving over a Not-ECT inner packet.
#[inline(always)]
pub const fn decap(outer: u8, inner: u8) -> Result<u8, DropReason> {
    match (inner & 3, outer & 3) {
        (NOT_ECT, CE) => Err(DropReason::EcnCeNotEct),
        (NOT_ECT, _) => Ok(NOT_ECT),
        (_, CE) => Ok(CE),
        (ECT0, ECT1) => Ok(ECT1),
        (i, _) => Ok(i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6040_decap_table() {
        // rows: inner; columns: outer Not-ECT, ECT(0), ECT(1), CE
        let d = |o, i| decap(o, i);
        let table = [
            (NOT_ECT, [Ok(NOT_ECT), Ok(NOT_ECT), Ok(NOT_ECT), Err(DropReason::EcnCeNotEct)]),
            (ECT0, [Ok(ECT0), Ok(ECT0), Ok(ECT1), Ok(CE)]),
            (ECT1, [Ok(ECT1), Ok(ECT1), Ok(ECT1), Ok(CE)]),
            (CE, [Ok(CE), Ok(CE), Ok(CE), Ok(CE)]),
        ];
        for (inner, row) in table {
            for (outer, want) in [NOT_ECT, ECT0, ECT1, CE].into_iter().zip(row) {
                assert_eq!(d(outer, inner), want, "outer {outer} inner {inner}");
            }
        }
    }

    #[test]
    fn encap_modes() {
        for v in 0..4 {
            assert_eq!(encap(EcnMode::Normal, v), v);
            assert_eq!(encap(EcnMode::Compat, v), NOT_ECT);
        }
    }
}

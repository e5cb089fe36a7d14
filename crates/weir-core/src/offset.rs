//! Start positions.

use std::fmt;

/// Where to start reading a partition.
///
/// ```
/// use weir_core::Offset;
/// assert_eq!(Offset::At(10).to_string(), "10");
/// assert_eq!(Offset::Beginning.to_string(), "beginning");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Offset {
    /// The first record still in the log (the log start offset).
    Beginning,
    /// After the last record: only records appended from now on.
    End,
    /// The group's committed offset; without one, `auto.offset.reset` decides.
    Stored,
    /// This exact offset: the next record delivered is the one at this offset (or the
    /// first after it, where offsets have gaps).
    At(i64),
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offset::Beginning => f.write_str("beginning"),
            Offset::End => f.write_str("end"),
            Offset::Stored => f.write_str("stored"),
            Offset::At(o) => write!(f, "{o}"),
        }
    }
}

//! Reading SPI result rows by column name: a column added to or moved in a query cannot shift
//! the others into the wrong fields, and a value of an unexpected type is an error instead of a
//! silent default.

use pgrx::prelude::*;
use pgrx::spi::SpiHeapTupleData;

use crate::error::spi_failed;

/// The column `name` of `row` (NULL: None). `what` names the read in the error.
pub fn column<T: IntoDatum + FromDatum>(
    row: &SpiHeapTupleData<'_>,
    name: &str,
    what: &str,
) -> Option<T> {
    row.get_by_name::<T, _>(name)
        .unwrap_or_else(|e| spi_failed(what, e))
}

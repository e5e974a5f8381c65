//! Values sealed for one row.
//!
//! age has no associated data, so the row a value belongs to is sealed
//! inside it and checked when it is opened: someone who can write to the
//! database but has no key cannot make the bot use Alice's tokens as
//! Mallory's by copying a cell from one row to another.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;
use crate::vault::Vault;

#[derive(Serialize)]
struct Sealing<'a, T: ?Sized> {
    row: &'a str,
    value: &'a T,
}

#[derive(Deserialize)]
struct Opening<T> {
    row: String,
    value: T,
}

/// `value` sealed for `row` (a path naming the table and key, such as
/// `connections/1001/demo/credentials`).
pub(super) fn seal<T: Serialize + ?Sized>(
    vault: &Vault,
    row: &str,
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    Ok(vault.seal_value(row, &Sealing { row, value })?)
}

/// The value sealed for `row`; one sealed for any other row is refused.
pub(super) fn open<T: DeserializeOwned>(
    vault: &Vault,
    row: &str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    let opened: Opening<T> = vault.open_value(row, bytes)?;
    if opened.row != row {
        return Err(StoreError::Misplaced);
    }
    Ok(opened.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vault::KeySource;

    #[test]
    fn a_value_opens_only_in_the_row_it_was_sealed_for() {
        let temp = tempfile::tempdir().unwrap();
        let vault = Vault::open(temp.path(), &KeySource::File(temp.path().join("k"))).unwrap();
        let sealed = seal(&vault, "t/1/demo", "tok-SECRET").unwrap();
        assert!(!sealed.windows(10).any(|w| w == b"tok-SECRET"));
        assert_eq!(
            open::<String>(&vault, "t/1/demo", &sealed).unwrap(),
            "tok-SECRET"
        );
        assert!(matches!(
            open::<String>(&vault, "t/2/demo", &sealed),
            Err(StoreError::Misplaced)
        ));
    }
}

//! Data set lists (`splits.csv`): any text is an error or entries whose paths stay inside
//! the data folder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(entries) = sonosam_data::parse_splits(text) {
        for e in &entries {
            for p in std::iter::once(&e.image).chain(&e.masks) {
                assert!(sonosam_data::inside_data_folder(p).is_ok());
                assert!(!std::path::Path::new(p).is_absolute());
            }
        }
    }
});

//! The embedding wire format (server answers, disk cache entries, the browser's cache): any
//! bytes are an error or an embedding whose size, checksum and geometry agree, and a decoded
//! embedding encodes back to a file that decodes to the same values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonosam_model::wire;

fuzz_target!(|data: &[u8]| {
    let Ok((header, values)) = wire::decode(data) else { return };
    assert_eq!(values.len(), header.shape.iter().product::<usize>());
    assert!(values.iter().all(|v| v.is_finite()));
    let again = wire::encode(&header, &values).expect("a decoded embedding encodes");
    let (_, values2) = wire::decode(&again).expect("and decodes again");
    assert_eq!(values.len(), values2.len());
});

//! Image files as users and servers receive them: inspection (format, size, truncation) never
//! panics, and whatever passes it decodes to an image of the announced size or is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonosam_model::preprocess::{decode_image, inspect_image};

fuzz_target!(|data: &[u8]| {
    let Ok(info) = inspect_image(data) else { return };
    // Large announced sizes are refused or accepted by the header check alone; decoding
    // them would only measure allocation speed.
    if u64::from(info.width) * u64::from(info.height) > 1 << 22 {
        return;
    }
    if let Ok(img) = decode_image(data) {
        assert_eq!((img.width(), img.height()), (info.width, info.height));
    }
});

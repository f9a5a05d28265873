//! DICOM files as users drop them and servers receive them: reading never panics; whatever it
//! accepts decodes each frame to the announced size or is an error; calibration never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonosam_dicom::Dicom;

fuzz_target!(|data: &[u8]| {
    let Ok(dicom) = Dicom::read(data) else { return };
    let (w, h) = (dicom.info.columns, dicom.info.rows);
    let _ = dicom.calibration(&[(0.0, 0.0), (f64::from(w), f64::from(h))]);
    // Large frames are accepted or refused by the header checks alone; decoding them would only
    // measure allocation speed.
    if u64::from(w) * u64::from(h) > 1 << 20 {
        return;
    }
    for n in 0..dicom.info.frames.min(2) {
        if let Ok(frame) = dicom.frame(n) {
            assert_eq!(frame.dimensions(), (w, h));
        }
    }
});

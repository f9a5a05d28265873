//! DICOM out: the lesions of one image as a **Segmentation** (binary, one segment per lesion)
//! and as a **Comprehensive SR** following TID 1500 "Measurement Report" (one measurement group
//! per lesion: its outline, measurements and the shape calls), so that PACS and DICOM tools read
//! what sonosam measured.
//!
//! When the image came from a DICOM file both objects join its study (patient and study
//! attributes copied, the source instance and frame referenced); otherwise a new study is made
//! up (empty patient attributes, and the series description says so), and the SR's groups
//! carry no image region (TID 1501 instead of TID 1410: there is no image to point into).
//!
//! Codes: DICOM (DCM) for the template's structure, SNOMED CT (SCT) for lesion, long axis,
//! short axis and area, UCUM for units; every other descriptor and the calls use the private
//! scheme `99SONOSAM` (declared in the Coding Scheme Identification Sequence).

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use sha2::{Digest, Sha256};

use crate::{Dicom, DicomError, Result};

/// The private coding scheme of sonosam's descriptors and calls.
pub const PRIVATE_SCHEME: &str = "99SONOSAM";
const SOP_SEGMENTATION: &str = "1.2.840.10008.5.1.4.1.1.66.4";
const SOP_COMPREHENSIVE_SR: &str = "1.2.840.10008.5.1.4.1.1.88.33";

/// One lesion to export.
pub struct Lesion<'a> {
    /// Its label ("lesion 1").
    pub name: &'a str,
    /// Its mask, `width × height` bytes (non-zero: lesion), row-major.
    pub mask: &'a [u8],
    /// Its outline, pixel positions `(column, row)` in order (closed by the writer).
    pub outline: &'a [(f64, f64)],
    /// Measured numbers: `(key, meaning, value, UCUM unit)`.
    pub numbers: Vec<(&'a str, &'a str, f64, &'a str)>,
    /// Categorical calls: `(concept key, value key)`, e.g. `("shape", "oval")`.
    pub calls: Vec<(&'a str, &'a str)>,
}

/// The image the lesions are on, and what to write about the writer.
pub struct Export<'a> {
    /// The DICOM file and frame (from 0) the image is, if it is one.
    pub source: Option<(&'a Dicom, u32)>,
    pub width: u32,
    pub height: u32,
    pub lesions: &'a [Lesion<'a>],
    /// When (ISO 8601: `2026-11-30T21:50:04Z`).
    pub created: &'a str,
    /// The image's file name: with the frame and `created`, what the new UIDs are made from
    /// (so the SEG and the SR of one export share a made-up study).
    pub image_name: &'a str,
    pub software_version: &'a str,
    /// De-identify (DICOM PS3.15 Basic Application Confidentiality Profile): no patient name,
    /// ID, birth date or other identifying attribute of the source is copied; the source's
    /// study, series and instance UIDs are replaced by UIDs derived from them (the same
    /// replacement every time, so the SEG and the SR still refer to each other and to a
    /// source de-identified the same way); dates are left empty; the objects say so (Patient
    /// Identity Removed, De-identification Method and its code).
    pub deidentify: bool,
}

/// A coded concept: value, scheme, meaning.
type Code<'a> = (&'a str, &'a str, &'a str);

impl Export<'_> {
    /// The binary Segmentation (Part 10 bytes, explicit VR little endian).
    pub fn segmentation(&self) -> Result<Vec<u8>> {
        self.check()?;
        let mut obj = self.common(SOP_SEGMENTATION, "SEG", "segmentation", 300)?;
        put_strs(&mut obj, tags::IMAGE_TYPE, VR::CS, &["DERIVED", "PRIMARY"]);
        put_str(&mut obj, tags::CONTENT_LABEL, VR::CS, "LESIONS");
        put_str(&mut obj, tags::CONTENT_DESCRIPTION, VR::LO, "Breast-ultrasound lesions segmented by sonosam");
        put_str(&mut obj, tags::CONTENT_CREATOR_NAME, VR::PN, "");
        put(&mut obj, tags::SAMPLES_PER_PIXEL, VR::US, 1u16);
        put_str(&mut obj, tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
        put(&mut obj, tags::ROWS, VR::US, self.height as u16);
        put(&mut obj, tags::COLUMNS, VR::US, self.width as u16);
        put_str(&mut obj, tags::NUMBER_OF_FRAMES, VR::IS, &self.lesions.len().to_string());
        put(&mut obj, tags::BITS_ALLOCATED, VR::US, 1u16);
        put(&mut obj, tags::BITS_STORED, VR::US, 1u16);
        put(&mut obj, tags::HIGH_BIT, VR::US, 0u16);
        put(&mut obj, tags::PIXEL_REPRESENTATION, VR::US, 0u16);
        put_str(&mut obj, tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00");
        put_str(&mut obj, tags::PRESENTATION_LUT_SHAPE, VR::CS, "IDENTITY");
        put_str(&mut obj, tags::SEGMENTATION_TYPE, VR::CS, "BINARY");
        put_str(&mut obj, tags::SEGMENTS_OVERLAP, VR::CS, "UNDEFINED");
        let segments = self.lesions.iter().enumerate().map(|(k, l)| segment(k, l, self.software_version)).collect();
        put_seq(&mut obj, tags::SEGMENT_SEQUENCE, segments);
        self.dimensions(&mut obj);
        // The instances the segmentation derives from.
        if let Some(series) = self.referenced_series(tags::REFERENCED_INSTANCE_SEQUENCE) {
            put_seq(&mut obj, tags::REFERENCED_SERIES_SEQUENCE, vec![series]);
        }
        put_seq(&mut obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![InMemDicomObject::new_empty()]);
        let frames = (0..self.lesions.len()).map(|k| self.frame_groups(k)).collect();
        put_seq(&mut obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frames);
        if let Some(item) = self.source_reference() {
            put_seq(&mut obj, tags::SOURCE_IMAGE_SEQUENCE, vec![item]);
        }
        put(&mut obj, tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(self.packed_frames()));
        write(obj)
    }

    /// The TID 1500 Measurement Report as a Comprehensive SR (Part 10 bytes).
    pub fn measurement_report(&self) -> Result<Vec<u8>> {
        self.check()?;
        let mut obj = self.common(SOP_COMPREHENSIVE_SR, "SR", "report", 301)?;
        put_str(&mut obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
        put_str(&mut obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
        put_seq(&mut obj, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]);
        put_seq(&mut obj, tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]);
        if let Some(evidence) = self.evidence() {
            put_seq(&mut obj, tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE, vec![evidence]);
        }
        put_seq(&mut obj, tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE, vec![{
            let mut s = InMemDicomObject::new_empty();
            put_str(&mut s, tags::CODING_SCHEME_DESIGNATOR, VR::SH, PRIVATE_SCHEME);
            put_str(&mut s, tags::CODING_SCHEME_NAME, VR::ST, "sonosam shape descriptors and computed suggestions");
            s
        }]);
        // The root: CONTAINER "Imaging Measurement Report" (TID 1500).
        put_str(&mut obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
        put_seq(&mut obj, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code(("126000", "DCM", "Imaging Measurement Report"))]);
        put_str(&mut obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
        put_seq(&mut obj, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template("1500")]);
        let mut content = vec![
            item_code("HAS CONCEPT MOD", ("121049", "DCM", "Language of Content Item and Descendants"), ("en-US", "RFC5646", "English (United States)")),
            item_code("HAS OBS CONTEXT", ("121005", "DCM", "Observer Type"), ("121007", "DCM", "Device")),
            item_uid("HAS OBS CONTEXT", ("121012", "DCM", "Device Observer UID"), &self.uid("device")),
            item_text("HAS OBS CONTEXT", ("121013", "DCM", "Device Observer Name"), "sonosam"),
            item_code("HAS CONCEPT MOD", ("121058", "DCM", "Procedure reported"), ("47079000", "SCT", "Ultrasonography of breast")),
        ];
        let groups = self.lesions.iter().map(|l| self.measurement_group(l)).collect();
        content.push(container("CONTAINS", ("126010", "DCM", "Imaging Measurements"), None, groups));
        put_seq(&mut obj, tags::CONTENT_SEQUENCE, content);
        write(obj)
    }

    fn check(&self) -> Result<()> {
        let pixels = self.width as usize * self.height as usize;
        let bad = |why: String| Err(DicomError::Export(why));
        if self.width == 0 || self.height == 0 || self.width > u16::MAX as u32 || self.height > u16::MAX as u32 {
            return bad(format!("an image of {} × {} pixels", self.width, self.height));
        }
        if self.lesions.is_empty() {
            return bad("no lesion to export".into());
        }
        if let Some(l) = self.lesions.iter().find(|l| l.mask.len() != pixels) {
            return bad(format!("{}'s mask is not {} × {}", l.name, self.width, self.height));
        }
        Ok(())
    }

    /// A new UID for `role`: `2.25.` and 128 bits of SHA-256 of the seed and the role.
    fn uid(&self, role: &str) -> String {
        let frame = self.source.map_or(0, |(_, f)| f);
        uid_from(format!("{}/{frame}/{}/{role}", self.image_name, self.created).as_bytes())
    }

    /// SOP, patient, study, series, equipment and content date: what both objects share.
    fn common(&self, sop_class: &str, modality: &str, role: &str, series_number: u32) -> Result<InMemDicomObject> {
        let mut obj = InMemDicomObject::new_empty();
        put_str(&mut obj, tags::SOP_CLASS_UID, VR::UI, sop_class);
        put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &self.uid(&format!("{role}/instance")));
        put_str(&mut obj, tags::MODALITY, VR::CS, modality);
        let (date, time) = if self.deidentify { Default::default() } else { dicom_date_time(self.created) };
        for (tag, vr, value) in [
            (tags::INSTANCE_CREATION_DATE, VR::DA, &date),
            (tags::INSTANCE_CREATION_TIME, VR::TM, &time),
            (tags::CONTENT_DATE, VR::DA, &date),
            (tags::CONTENT_TIME, VR::TM, &time),
        ] {
            put_str(&mut obj, tag, vr, value);
        }
        const COPIED: [(Tag, VR); 10] = [
            (tags::PATIENT_NAME, VR::PN),
            (tags::PATIENT_ID, VR::LO),
            (tags::PATIENT_BIRTH_DATE, VR::DA),
            (tags::PATIENT_SEX, VR::CS),
            (tags::STUDY_INSTANCE_UID, VR::UI),
            (tags::STUDY_DATE, VR::DA),
            (tags::STUDY_TIME, VR::TM),
            (tags::STUDY_ID, VR::SH),
            (tags::ACCESSION_NUMBER, VR::SH),
            (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        ];
        match self.source {
            Some((dicom, _)) if !self.deidentify => {
                for (tag, vr) in COPIED {
                    put_str(&mut obj, tag, vr, &crate::text(&dicom.obj, tag).unwrap_or_default());
                }
                if crate::text(&dicom.obj, tags::STUDY_INSTANCE_UID).is_none() {
                    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &self.uid("study"));
                }
                put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &format!("sonosam {role}"));
            }
            Some(_) => {
                for (tag, vr) in COPIED {
                    put_str(&mut obj, tag, vr, "");
                }
                put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "ANONYMOUS");
                // A pseudonym: the same for every export of the same patient.
                let pseudonym: String = self.source_uid(tags::PATIENT_ID).unwrap_or_default().chars().skip(5).take(16).collect();
                put_str(&mut obj, tags::PATIENT_ID, VR::LO, &pseudonym);
                put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &self.source_uid(tags::STUDY_INSTANCE_UID).unwrap_or_else(|| self.uid("study")));
                put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &format!("sonosam {role} (de-identified)"));
                put_str(&mut obj, tags::PATIENT_IDENTITY_REMOVED, VR::CS, "YES");
                put_str(&mut obj, tags::DEIDENTIFICATION_METHOD, VR::LO, "DICOM PS3.15 Basic Application Confidentiality Profile (sonosam)");
                put_seq(&mut obj, tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE, vec![code(("113100", "DCM", "Basic Application Confidentiality Profile"))]);
            }
            None => {
                for (tag, vr) in COPIED {
                    put_str(&mut obj, tag, vr, "");
                }
                put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &self.uid("study"));
                put_str(&mut obj, tags::STUDY_DATE, VR::DA, &date);
                put_str(&mut obj, tags::STUDY_TIME, VR::TM, &time);
                put_str(&mut obj, tags::SERIES_DESCRIPTION, VR::LO, &format!("sonosam {role} (new study: the image was not DICOM)"));
            }
        }
        put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &self.uid(&format!("{role}/series")));
        put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, &series_number.to_string());
        put_str(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
        put_str(&mut obj, tags::MANUFACTURER, VR::LO, "sonosam");
        put_str(&mut obj, tags::MANUFACTURER_MODEL_NAME, VR::LO, "sonosam");
        put_str(&mut obj, tags::DEVICE_SERIAL_NUMBER, VR::LO, "0");
        put_str(&mut obj, tags::SOFTWARE_VERSIONS, VR::LO, self.software_version);
        Ok(obj)
    }

    /// A UID (or identifier) of the source, as exported: itself, or when de-identifying its
    /// replacement (`2.25.` + a hash of it: the same every time).
    fn source_uid(&self, tag: Tag) -> Option<String> {
        let (dicom, _) = self.source?;
        let value = crate::text(&dicom.obj, tag)?;
        Some(if self.deidentify { uid_from(format!("sonosam de-identification/{value}").as_bytes()) } else { value })
    }

    /// The source image (and frame) as a reference item, if there is one.
    fn source_reference(&self) -> Option<InMemDicomObject> {
        let (dicom, frame) = self.source?;
        let mut item = InMemDicomObject::new_empty();
        put_str(&mut item, tags::REFERENCED_SOP_CLASS_UID, VR::UI, &crate::text(&dicom.obj, tags::SOP_CLASS_UID)?);
        put_str(&mut item, tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, &self.source_uid(tags::SOP_INSTANCE_UID)?);
        if dicom.info.frames > 1 {
            put_str(&mut item, tags::REFERENCED_FRAME_NUMBER, VR::IS, &(frame + 1).to_string());
        }
        Some(item)
    }

    /// The source's study, series and instance, for the SR's evidence and the SEG's
    /// Referenced Series Sequence.
    fn evidence(&self) -> Option<InMemDicomObject> {
        let mut study = InMemDicomObject::new_empty();
        put_str(&mut study, tags::STUDY_INSTANCE_UID, VR::UI, &self.source_uid(tags::STUDY_INSTANCE_UID)?);
        put_seq(&mut study, tags::REFERENCED_SERIES_SEQUENCE, vec![self.referenced_series(tags::REFERENCED_SOP_SEQUENCE)?]);
        Some(study)
    }

    /// The source's series with its instance listed under `instances` (the SR's evidence names
    /// it Referenced SOP Sequence, the SEG's Referenced Series Sequence Referenced Instance
    /// Sequence).
    fn referenced_series(&self, instances: Tag) -> Option<InMemDicomObject> {
        let mut instance = self.source_reference()?;
        instance.remove_element(tags::REFERENCED_FRAME_NUMBER);
        let mut series = InMemDicomObject::new_empty();
        put_str(&mut series, tags::SERIES_INSTANCE_UID, VR::UI, &self.source_uid(tags::SERIES_INSTANCE_UID)?);
        put_seq(&mut series, instances, vec![instance]);
        Some(series)
    }

    /// One dimension: the referenced segment number.
    fn dimensions(&self, obj: &mut InMemDicomObject) {
        let organisation = self.uid("segmentation/dimensions");
        let mut org = InMemDicomObject::new_empty();
        put_str(&mut org, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organisation);
        put_seq(obj, tags::DIMENSION_ORGANIZATION_SEQUENCE, vec![org]);
        let mut index = InMemDicomObject::new_empty();
        put_str(&mut index, tags::DIMENSION_ORGANIZATION_UID, VR::UI, &organisation);
        put(&mut index, tags::DIMENSION_INDEX_POINTER, VR::AT, tags::REFERENCED_SEGMENT_NUMBER);
        put(&mut index, tags::FUNCTIONAL_GROUP_POINTER, VR::AT, tags::SEGMENT_IDENTIFICATION_SEQUENCE);
        put_str(&mut index, tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, "Referenced Segment Number");
        put_seq(obj, tags::DIMENSION_INDEX_SEQUENCE, vec![index]);
    }

    /// Frame `k`'s functional groups: its segment, its dimension index, its source.
    fn frame_groups(&self, k: usize) -> InMemDicomObject {
        let mut frame = InMemDicomObject::new_empty();
        if let Some(mut source) = self.source_reference() {
            put_str(&mut source, tags::SPATIAL_LOCATIONS_PRESERVED, VR::CS, "YES");
            put_seq(&mut source, tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE, vec![code(("121322", "DCM", "Source image for image processing operation"))]);
            let mut derivation = InMemDicomObject::new_empty();
            put_seq(&mut derivation, tags::SOURCE_IMAGE_SEQUENCE, vec![source]);
            put_seq(&mut derivation, tags::DERIVATION_CODE_SEQUENCE, vec![code(("113076", "DCM", "Segmentation"))]);
            put_seq(&mut frame, tags::DERIVATION_IMAGE_SEQUENCE, vec![derivation]);
        }
        let mut content = InMemDicomObject::new_empty();
        put(&mut content, tags::DIMENSION_INDEX_VALUES, VR::UL, (k + 1) as u32);
        put_seq(&mut frame, tags::FRAME_CONTENT_SEQUENCE, vec![content]);
        let mut segment = InMemDicomObject::new_empty();
        put(&mut segment, tags::REFERENCED_SEGMENT_NUMBER, VR::US, (k + 1) as u16);
        put_seq(&mut frame, tags::SEGMENT_IDENTIFICATION_SEQUENCE, vec![segment]);
        frame
    }

    /// The masks, one frame each, one bit per pixel (first pixel in the lowest bit), frames
    /// packed back to back, padded to an even length.
    fn packed_frames(&self) -> Vec<u8> {
        let bits = self.lesions.iter().flat_map(|l| l.mask.iter().map(|&v| v != 0));
        let mut out = vec![0u8; (self.lesions.len() * self.lesions[0].mask.len()).div_ceil(8)];
        for (i, on) in bits.enumerate() {
            out[i / 8] |= u8::from(on) << (i % 8);
        }
        if out.len() % 2 == 1 {
            out.push(0);
        }
        out
    }

    /// TID 1410 (with the outline on the source image) or TID 1501 (no DICOM image to point
    /// into): tracking identifiers, finding, measurements, calls.
    fn measurement_group(&self, l: &Lesion<'_>) -> InMemDicomObject {
        let mut items = vec![
            item_text("HAS OBS CONTEXT", ("112039", "DCM", "Tracking Identifier"), l.name),
            item_uid("HAS OBS CONTEXT", ("112040", "DCM", "Tracking Unique Identifier"), &self.uid(&format!("tracking/{}", l.name))),
            item_code("CONTAINS", ("121071", "DCM", "Finding"), ("52988006", "SCT", "Lesion")),
        ];
        let region = self.source_reference().filter(|_| l.outline.len() >= 3).map(|image| {
            let mut reference = concept_item("SELECTED FROM", "IMAGE", ("260753009", "SCT", "Source"));
            put_seq(&mut reference, tags::REFERENCED_SOP_SEQUENCE, vec![image]);
            let mut scoord = concept_item("CONTAINS", "SCOORD", ("111030", "DCM", "Image Region"));
            put_str(&mut scoord, tags::GRAPHIC_TYPE, VR::CS, "POLYLINE");
            let closed = l.outline.iter().chain(l.outline.first()).flat_map(|&(x, y)| [x as f32, y as f32]);
            put(&mut scoord, tags::GRAPHIC_DATA, VR::FL, PrimitiveValue::F32(closed.collect()));
            put_seq(&mut scoord, tags::CONTENT_SEQUENCE, vec![reference]);
            scoord
        });
        for &(key, meaning, value, unit) in &l.numbers {
            items.push(item_num(number_code(key, meaning), value, unit));
        }
        for &(concept, value) in &l.calls {
            let (concept_value, concept_meaning) = (private_value(concept), format!("{} (computed suggestion)", words(concept)));
            let (value_value, value_meaning) = (private_value(value), words(value));
            items.push(item_code("CONTAINS", (&concept_value, PRIVATE_SCHEME, &concept_meaning), (&value_value, PRIVATE_SCHEME, &value_meaning)));
        }
        let template_id = if region.is_some() { "1410" } else { "1501" };
        items.extend(region);
        container("CONTAINS", ("125007", "DCM", "Measurement Group"), Some(template_id), items)
    }
}

/// One segment of the Segment Sequence.
fn segment(k: usize, l: &Lesion<'_>, version: &str) -> InMemDicomObject {
    let mut s = InMemDicomObject::new_empty();
    put(&mut s, tags::SEGMENT_NUMBER, VR::US, (k + 1) as u16);
    put_str(&mut s, tags::SEGMENT_LABEL, VR::LO, l.name);
    put_seq(&mut s, tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE, vec![code(("49755003", "SCT", "Morphologically Abnormal Structure"))]);
    put_seq(&mut s, tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE, vec![code(("52988006", "SCT", "Lesion"))]);
    put_str(&mut s, tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC");
    put_str(&mut s, tags::SEGMENT_ALGORITHM_NAME, VR::LO, "sonosam");
    let mut algorithm = InMemDicomObject::new_empty();
    put_seq(&mut algorithm, tags::ALGORITHM_FAMILY_CODE_SEQUENCE, vec![code(("123110", "DCM", "Artificial Intelligence"))]);
    put_str(&mut algorithm, tags::ALGORITHM_NAME, VR::LO, "sonosam");
    put_str(&mut algorithm, tags::ALGORITHM_VERSION, VR::LO, version);
    put_seq(&mut s, tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE, vec![algorithm]);
    s
}

/// Standard codes where they exist (SNOMED CT), else the private scheme.
fn number_code<'a>(key: &str, meaning: &'a str) -> (String, &'static str, &'a str) {
    match key {
        "long_axis" => ("103339001".into(), "SCT", meaning),
        "short_axis" => ("103340004".into(), "SCT", meaning),
        "area" => ("42798000".into(), "SCT", meaning),
        _ => (private_value(key), PRIVATE_SCHEME, meaning),
    }
}

/// A private code value from a snake_case key: upper case without underscores, ≤ 16 chars.
fn private_value(key: &str) -> String {
    key.replace('_', "").to_ascii_uppercase().chars().take(16).collect()
}

/// `not_parallel` → `Not parallel`.
fn words(key: &str) -> String {
    let s = key.replace('_', " ");
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// `2.25.` followed by the first 128 bits of SHA-256 of `seed`, in decimal.
pub fn uid_from(seed: &[u8]) -> String {
    let digest = Sha256::digest(seed);
    let n = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
    format!("2.25.{n}")
}

/// `2026-11-30T21:50:04.123Z` → (`20261130`, `215004`).
fn dicom_date_time(iso: &str) -> (String, String) {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let (date, time) = iso.split_once('T').unwrap_or((iso, ""));
    let time = time.split(['.', 'Z', '+']).next().unwrap_or("");
    (digits(date), digits(time))
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, value.into()));
}

fn put_str(obj: &mut InMemDicomObject, tag: Tag, vr: VR, value: &str) {
    put(obj, tag, vr, PrimitiveValue::from(value));
}

fn put_strs(obj: &mut InMemDicomObject, tag: Tag, vr: VR, values: &[&str]) {
    put(obj, tag, vr, PrimitiveValue::Strs(values.iter().map(|s| s.to_string()).collect()));
}

fn put_seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

fn code((value, scheme, meaning): Code<'_>) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    put_str(&mut c, tags::CODE_VALUE, VR::SH, value);
    put_str(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put_str(&mut c, tags::CODE_MEANING, VR::LO, meaning);
    c
}

fn template(id: &str) -> InMemDicomObject {
    let mut t = InMemDicomObject::new_empty();
    put_str(&mut t, tags::MAPPING_RESOURCE, VR::CS, "DCMR");
    put_str(&mut t, tags::TEMPLATE_IDENTIFIER, VR::CS, id);
    t
}

/// A content item's relationship, value type and concept name.
fn concept_item(relationship: &str, value_type: &str, name: Code<'_>) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put_str(&mut item, tags::RELATIONSHIP_TYPE, VR::CS, relationship);
    put_str(&mut item, tags::VALUE_TYPE, VR::CS, value_type);
    put_seq(&mut item, tags::CONCEPT_NAME_CODE_SEQUENCE, vec![code(name)]);
    item
}

fn item_code(relationship: &str, name: Code<'_>, value: Code<'_>) -> InMemDicomObject {
    let mut item = concept_item(relationship, "CODE", name);
    put_seq(&mut item, tags::CONCEPT_CODE_SEQUENCE, vec![code(value)]);
    item
}

fn item_text(relationship: &str, name: Code<'_>, text: &str) -> InMemDicomObject {
    let mut item = concept_item(relationship, "TEXT", name);
    put_str(&mut item, tags::TEXT_VALUE, VR::UT, text);
    item
}

fn item_uid(relationship: &str, name: Code<'_>, uid: &str) -> InMemDicomObject {
    let mut item = concept_item(relationship, "UIDREF", name);
    put_str(&mut item, tags::UID, VR::UI, uid);
    item
}

fn item_num((value, scheme, meaning): (String, &str, &str), number: f64, unit: &str) -> InMemDicomObject {
    let mut item = concept_item("CONTAINS", "NUM", (&value, scheme, meaning));
    let unit_meaning = match unit {
        "mm" => "millimeter",
        "mm2" => "square millimeter",
        "deg" => "degree",
        _ => "no units",
    };
    let mut measured = InMemDicomObject::new_empty();
    put_seq(&mut measured, tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![code((unit, "UCUM", unit_meaning))]);
    put_str(&mut measured, tags::NUMERIC_VALUE, VR::DS, &decimal_string(number));
    put_seq(&mut item, tags::MEASURED_VALUE_SEQUENCE, vec![measured]);
    item
}

/// A DS value (at most 16 characters) close to `v`.
fn decimal_string(v: f64) -> String {
    (0..=6)
        .rev()
        .map(|digits| {
            let s = format!("{v:.digits$}");
            if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
        })
        .find(|s| s.len() <= 16)
        .unwrap_or_else(|| format!("{v:.3e}"))
}

fn container(relationship: &str, name: Code<'_>, template_id: Option<&str>, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut item = concept_item(relationship, "CONTAINER", name);
    put_str(&mut item, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    if let Some(id) = template_id {
        put_seq(&mut item, tags::CONTENT_TEMPLATE_SEQUENCE, vec![template(id)]);
    }
    put_seq(&mut item, tags::CONTENT_SEQUENCE, children);
    item
}

/// Part 10 bytes (explicit VR little endian).
fn write(obj: InMemDicomObject) -> Result<Vec<u8>> {
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .implementation_class_uid(uid_from(b"sonosam implementation class"))
        .implementation_version_name(format!("sonosam {}", env!("CARGO_PKG_VERSION")));
    let file = obj.with_meta(meta).map_err(|e| DicomError::Export(e.to_string()))?;
    let mut out = Vec::new();
    file.write_all(&mut out).map_err(|e| DicomError::Export(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_dates_and_numbers() {
        let u = uid_from(b"x");
        assert!(u.starts_with("2.25.") && u.len() <= 64 && u[5..].chars().all(|c| c.is_ascii_digit()));
        assert_ne!(uid_from(b"x"), uid_from(b"y"));
        assert_eq!(dicom_date_time("2026-11-30T21:50:04.123Z"), ("20261130".into(), "215004".into()));
        assert_eq!(decimal_string(12.5), "12.5");
        assert_eq!(decimal_string(0.123456789), "0.123457");
        assert!(decimal_string(123456789012.345).len() <= 16);
        assert_eq!(private_value("depth_width_ratio"), "DEPTHWIDTHRATIO");
        assert_eq!(words("not_parallel"), "Not parallel");
    }
}

//! Declared lengths against the bytes a file holds, checked before dicom-rs parses it.
//!
//! dicom-parser reserves a value's declared length before reading it, so a damaged file of
//! under 1 kB that declares a 1.2 GB value made it allocate 1.2 GB (found by the `dicom` fuzz
//! target; in the browser that can end the model's worker). This walks every header of the
//! file in order — the meta group, the data set, sequences and their items, the fragments of
//! encapsulated pixel data — and refuses the file when a defined length runs past its end.
//! Headers are read as dicom-rs reads them (an unknown VR as UN, with a 32-bit length; the meta
//! group by its group length; little or big endian). A deflated data set's bytes are not
//! headers: [`check`] says where it starts, and [`check_inflated`] walks it once inflated.

use dicom_core::Tag;
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::VR;
use dicom_dictionary_std::StandardDataDictionary;

/// The length that says "until a delimiter".
const UNDEFINED: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    ExplicitLittle,
    ImplicitLittle,
    ExplicitBig,
}

/// What [`check`] found.
#[derive(Debug, PartialEq)]
pub enum Checked {
    /// Every header, and each fits the file.
    Walked,
    /// The meta group fits, and a deflated data set starts at this offset: its bytes are not
    /// headers until inflated (then [`check_inflated`]).
    Deflated(usize),
}

/// Check the data set that starts at `start` (after `DICM` when `meta`, whose group 0002 is
/// explicit little endian and names the data set's transfer syntax; otherwise a bare implicit
/// VR little endian data set). `Err` names the first element that declares too much.
pub fn check(bytes: &[u8], start: usize, meta: bool) -> Result<Checked, String> {
    let mut walk = Walk { bytes, pos: start, encoding: Encoding::ImplicitLittle, fragments: false, open: Vec::new() };
    if meta {
        walk.encoding = Encoding::ExplicitLittle;
        // Without its group length dicom-rs refuses the meta group itself.
        let Some(syntax) = walk.meta_group()? else { return Ok(Checked::Walked) };
        match syntax.as_deref() {
            Some("1.2.840.10008.1.2") => walk.encoding = Encoding::ImplicitLittle,
            Some("1.2.840.10008.1.2.2") => walk.encoding = Encoding::ExplicitBig,
            Some(DEFLATED) => return Ok(Checked::Deflated(walk.pos)),
            _ => walk.encoding = Encoding::ExplicitLittle,
        }
    }
    walk.data_set()?;
    Ok(Checked::Walked)
}

/// Deflated Explicit VR Little Endian.
pub const DEFLATED: &str = "1.2.840.10008.1.2.1.99";

/// Check an inflated data set (explicit VR little endian, from its first byte).
pub fn check_inflated(bytes: &[u8]) -> Result<(), String> {
    Walk { bytes, pos: 0, encoding: Encoding::ExplicitLittle, fragments: false, open: Vec::new() }.data_set()
}

struct Walk<'a> {
    bytes: &'a [u8],
    pos: usize,
    encoding: Encoding,
    /// Inside encapsulated pixel data: items are fragments (bytes), not data sets.
    fragments: bool,
    /// The sequences and items the walk is in, innermost last: what is inside one of defined
    /// length must end inside it (dicom-rs reads a container's contents up to its end).
    open: Vec<Open>,
}

/// A sequence or an item being walked through, and where it ends (`None`: at its delimiter).
struct Open {
    sequence: bool,
    end: Option<usize>,
}

/// One header: the tag, its VR when the encoding states it, and the declared length.
struct Header {
    tag: Tag,
    vr: Option<VR>,
    len: u32,
}

impl Walk<'_> {
    fn u16_at(&self, at: usize) -> u16 {
        let b = [self.bytes[at], self.bytes[at + 1]];
        if self.encoding == Encoding::ExplicitBig { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [self.bytes[at], self.bytes[at + 1], self.bytes[at + 2], self.bytes[at + 3]];
        if self.encoding == Encoding::ExplicitBig { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// The header at the current position (and past it), `None` at the end.
    fn header(&mut self) -> Option<Header> {
        if self.remaining() < 8 {
            return None;
        }
        let tag = Tag(self.u16_at(self.pos), self.u16_at(self.pos + 2));
        if tag.0 == 0xFFFE || self.encoding == Encoding::ImplicitLittle {
            let len = self.u32_at(self.pos + 4);
            self.pos += 8;
            return Some(Header { tag, vr: None, len });
        }
        let vr = VR::from_binary([self.bytes[self.pos + 4], self.bytes[self.pos + 5]]).unwrap_or(VR::UN);
        let long = matches!(
            vr,
            VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::SQ | VR::SV | VR::UC | VR::UN | VR::UR | VR::UT | VR::UV
        );
        if !long {
            let len = u32::from(self.u16_at(self.pos + 6));
            self.pos += 8;
            return Some(Header { tag, vr: Some(vr), len });
        }
        if self.remaining() < 12 {
            return None;
        }
        let len = self.u32_at(self.pos + 8);
        self.pos += 12;
        Some(Header { tag, vr: Some(vr), len })
    }

    /// Skip a value of `len` bytes after checking that the file holds them.
    fn skip(&mut self, tag: Tag, len: u32) -> Result<(), String> {
        self.fits(tag, len)?;
        self.pos += len as usize;
        Ok(())
    }

    /// Whether the file — and the innermost sequence or item of defined length around it —
    /// holds the `len` bytes a header at the current position declares.
    fn fits(&self, tag: Tag, len: u32) -> Result<(), String> {
        let end = self.open.iter().rev().find_map(|o| o.end).unwrap_or(self.bytes.len());
        let room = end.min(self.bytes.len()).saturating_sub(self.pos);
        if len as usize > room {
            let whole = self.remaining();
            let around = if room < whole { format!(" (its sequence or item ends {room} bytes on)") } else { String::new() };
            return Err(format!(
                "element ({:04X},{:04X}) declares {len} bytes where {whole} remain{around}",
                tag.0, tag.1
            ));
        }
        Ok(())
    }

    /// Leave the sequences and items that end here; `Err` when a header ran past one's end.
    fn leave_finished(&mut self) -> Result<(), String> {
        while let Some(end) = self.open.last().and_then(|o| o.end) {
            if self.pos < end {
                break;
            }
            if self.pos > end {
                return Err(format!("a header runs {} bytes past the end of its sequence or item", self.pos - end));
            }
            self.open.pop();
        }
        Ok(())
    }

    /// The meta group, read as dicom-rs reads it: its group length (0002,0000), then headers
    /// until that many bytes are read, whatever their group. Each is checked; the Transfer
    /// Syntax UID is returned. `None` when the group length is not there (dicom-rs refuses).
    fn meta_group(&mut self) -> Result<Option<Option<String>>, String> {
        match self.header() {
            Some(h) if h.tag == Tag(0x0002, 0x0000) && h.len == 4 && self.remaining() >= 4 => {}
            _ => return Ok(None),
        }
        let end = self.pos + 4 + self.u32_at(self.pos) as usize;
        self.pos += 4;
        let mut syntax = None;
        while self.pos < end {
            let Some(h) = self.header() else { break };
            if h.len == UNDEFINED {
                return Ok(None);
            }
            if h.tag == Tag(0x0002, 0x0010) && (h.len as usize) <= self.remaining() {
                let value = &self.bytes[self.pos..self.pos + h.len as usize];
                syntax = Some(String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_string());
            }
            self.skip(h.tag, h.len)?;
        }
        Ok(Some(syntax))
    }

    /// Every header from here to the end. Sequences and their items are walked into (their
    /// contents are more headers); other values are skipped.
    fn data_set(&mut self) -> Result<(), String> {
        loop {
            self.leave_finished()?;
            let Some(h) = self.header() else { break };
            self.leave_finished()?;
            match (h.tag, h.len) {
                (Tag(0xFFFE, 0xE000), UNDEFINED) if self.fragments => {}
                (Tag(0xFFFE, 0xE000), len) if self.fragments => self.skip(h.tag, len)?,
                (Tag(0xFFFE, 0xE000), len) => {
                    if !self.open.last().is_some_and(|o| o.sequence) {
                        return Err("an item (FFFE,E000) outside a sequence".into());
                    }
                    self.enter(false, h.tag, len)?
                }
                (Tag(0xFFFE, 0xE0DD), _) if self.fragments => self.fragments = false,
                (Tag(0xFFFE, 0xE0DD), _) => self.close(true),
                (Tag(0xFFFE, 0xE00D), _) => self.close(false),
                // Encapsulated pixel data — unless the file says SQ, as dicom-rs then reads it
                // as a sequence whose items are data sets (found by the fuzz target: the JPEG
                // bytes read as headers declared 3.7 GB).
                (Tag(0x7FE0, 0x0010), UNDEFINED) if h.vr != Some(VR::SQ) => self.fragments = true,
                // Of undefined length: a sequence (also when written as UN).
                (tag, UNDEFINED) => self.enter(true, tag, UNDEFINED)?,
                (tag, len) if self.is_sequence(tag, h.vr) => self.enter(true, tag, len)?,
                (tag, len) => {
                    self.whole_values(tag, h.vr, len)?;
                    self.skip(tag, len)?
                }
            }
        }
        Ok(())
    }

    /// Into a sequence or an item: of defined length, it must fit, and its contents end at its
    /// end; of undefined length, at its delimiter.
    fn enter(&mut self, sequence: bool, tag: Tag, len: u32) -> Result<(), String> {
        let end = if len == UNDEFINED {
            None
        } else {
            self.fits(tag, len)?;
            Some(self.pos + len as usize)
        };
        self.open.push(Open { sequence, end });
        Ok(())
    }

    /// A delimiter: out of the innermost item of undefined length, or (`sequence`) out of the
    /// innermost sequence of undefined length and the items in it.
    fn close(&mut self, sequence: bool) {
        if let Some(at) = self.open.iter().rposition(|o| o.end.is_none() && o.sequence == sequence) {
            self.open.truncate(at);
        }
    }

    fn is_sequence(&self, tag: Tag, vr: Option<VR>) -> bool {
        Self::vr_of(tag, vr) == Some(VirtualVr::Exact(VR::SQ))
    }

    /// The stated VR, or the dictionary's in implicit VR.
    fn vr_of(tag: Tag, vr: Option<VR>) -> Option<VirtualVr> {
        match vr {
            Some(vr) => Some(VirtualVr::Exact(vr)),
            None => StandardDataDictionary.by_tag(tag).map(|e| e.vr()),
        }
    }

    /// A binary number's length is a whole number of values (as the standard requires): dicom-rs
    /// reads `len / size` values and goes on from there, so another length would make it read
    /// the following headers at other offsets than this walk checked.
    fn whole_values(&self, tag: Tag, vr: Option<VR>, len: u32) -> Result<(), String> {
        let size = match Self::vr_of(tag, vr) {
            Some(VirtualVr::Exact(VR::US | VR::SS | VR::OW)) | Some(VirtualVr::Xs) => 2,
            Some(VirtualVr::Exact(VR::UL | VR::SL | VR::FL | VR::AT | VR::OL | VR::OF)) => 4,
            Some(VirtualVr::Exact(VR::FD | VR::OD | VR::SV | VR::UV | VR::OV)) => 8,
            _ => return Ok(()),
        };
        if len % size != 0 {
            return Err(format!(
                "element ({:04X},{:04X}) has {len} bytes of values of {size} bytes each",
                tag.0, tag.1
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An implicit VR little endian element.
    fn element(group: u16, elem: u16, value: &[u8], declared: Option<u32>) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(group.to_le_bytes());
        v.extend(elem.to_le_bytes());
        v.extend(declared.unwrap_or(value.len() as u32).to_le_bytes());
        v.extend(value);
        v
    }

    #[test]
    fn a_value_longer_than_the_file_is_refused() {
        let mut ds = element(0x0008, 0x0060, b"US", None);
        ds.extend(element(0x7FE0, 0x0010, &[0; 10], Some(0x4800_0000)));
        let err = check(&ds, 0, false).unwrap_err();
        assert!(err.contains("(7FE0,0010) declares 1207959552 bytes where 10 remain"), "{err}");
    }

    #[test]
    fn sequences_are_walked_into() {
        // A sequence of defined length whose one item holds an element that declares too much.
        let inner = element(0x0018, 0x6012, &[1, 0], Some(5000));
        let item = element(0xFFFE, 0xE000, &inner, None);
        let ds = element(0x0018, 0x6011, &item, None);
        let err = check(&ds, 0, false).unwrap_err();
        assert!(err.contains("(0018,6012) declares 5000"), "{err}");
        // The same with lengths that fit is accepted, and so are undefined lengths.
        let inner = element(0x0018, 0x6012, &[1, 0], None);
        let item = element(0xFFFE, 0xE000, &inner, None);
        let mut ds = element(0x0018, 0x6011, &item, Some(UNDEFINED));
        ds.extend(element(0xFFFE, 0xE0DD, &[], None));
        check(&ds, 0, false).expect("a well-formed sequence");
    }

    #[test]
    fn big_endian_data_sets_are_walked_too() {
        // A Part-10 file: meta group (explicit little endian) naming explicit VR big endian,
        // then (0028,0010) US 2 and Pixel Data OW declaring 1 GB.
        let syntax = b"1.2.840.10008.1.2.2\0";
        let mut meta = vec![0x02, 0x00, 0x10, 0x00, b'U', b'I', syntax.len() as u8, 0];
        meta.extend(syntax);
        let mut file = vec![0u8; 128];
        file.extend(b"DICM");
        file.extend([0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        file.extend((meta.len() as u32).to_le_bytes());
        file.extend(meta);
        file.extend([0x00, 0x28, 0x00, 0x10, b'U', b'S', 0, 2, 1, 0]);
        file.extend([0x7F, 0xE0, 0x00, 0x10, b'O', b'W', 0, 0, 0x40, 0, 0, 0, 1, 2]);
        let err = check(&file, 132, true).unwrap_err();
        assert!(err.contains("(7FE0,0010) declares 1073741824 bytes where 2 remain"), "{err}");
    }

    #[test]
    fn numbers_come_whole() {
        // A group length (UL) of 1 byte: dicom-rs reads no value and takes that byte as the
        // start of the next header (the fuzz target's second out-of-memory input).
        let mut ds = element(0x0000, 0x0000, &[0], None);
        ds.extend([0xFE, 0xFF, 0xFF, 0xFF, 0x53, 0x54, 0xFF, 0xFF, 0xFF, 0xF7, 0x00, 0x00]);
        let err = check(&ds, 0, false).unwrap_err();
        assert!(err.contains("(0000,0000) has 1 bytes of values of 4 bytes each"), "{err}");
        check(&element(0x0028, 0x0010, &[0, 1], None), 0, false).expect("Rows, one US");
        // A (FFFE,xxxx) tag that is no item or delimiter is an element like any other (the
        // fuzz target's third input: dicom-rs reserved the 4.29 GB it declares).
        let err = check(&[0xFE, 0xFF, 0xFF, 0xFF, 0x41, 0x53, 0xFF, 0xFF, 0, 0], 0, false).unwrap_err();
        assert!(err.contains("(FFFE,FFFF) declares 4294923073 bytes"), "{err}");
    }

    #[test]
    fn items_belong_in_sequences() {
        // (0018,6011) written as UN of length 0, then an item at the top level (a fuzz input:
        // dicom-rs read on from there differently and reserved 1.6 GB).
        let mut ds = element(0x0008, 0x0060, b"US", None);
        ds.extend(element(0xFFFE, 0xE000, &element(0x0018, 0x6012, &[1, 0], None), None));
        assert!(check(&ds, 0, false).unwrap_err().contains("outside a sequence"));
        // Items of undefined length in a sequence of undefined length, with their delimiters.
        let mut ds = element(0x0018, 0x6011, &[], Some(UNDEFINED));
        ds.extend(element(0xFFFE, 0xE000, &[], Some(UNDEFINED)));
        ds.extend(element(0x0018, 0x6012, &[1, 0], None));
        ds.extend(element(0xFFFE, 0xE00D, &[], None));
        ds.extend(element(0xFFFE, 0xE0DD, &[], None));
        ds.extend(element(0x0028, 0x0010, &[1, 0], None));
        check(&ds, 0, false).expect("a well-formed sequence of undefined length");
        // After its delimiter the sequence is closed: a further item is outside it.
        ds.extend(element(0xFFFE, 0xE000, &[], None));
        assert!(check(&ds, 0, false).is_err());
    }

    #[test]
    fn contents_end_inside_their_sequence() {
        // An item of 12 bytes holding an element of 4 + 4 + 10 bytes: it runs past the item.
        let inner = element(0x0018, 0x6012, &[0; 10], None);
        let mut item = element(0xFFFE, 0xE000, &[], Some(12));
        item.extend(&inner);
        let ds = element(0x0018, 0x6011, &item, None);
        let err = check(&ds, 0, false).unwrap_err();
        assert!(err.contains("(0018,6012) declares 10 bytes") && err.contains("ends 4 bytes on"), "{err}");
    }

    #[test]
    fn encapsulated_fragments_are_skipped_not_parsed() {
        // Fragment bytes that look like a header declaring a huge length must not be read as one.
        let mut ds = element(0x7FE0, 0x0010, &[], Some(UNDEFINED));
        ds.extend(element(0xFFFE, 0xE000, &[], None)); // offset table
        ds.extend(element(0xFFFE, 0xE000, &element(0x0010, 0x0010, &[], Some(0x7000_0000)), None));
        ds.extend(element(0xFFFE, 0xE0DD, &[], None));
        check(&ds, 0, false).expect("fragments are opaque");
        let mut cut = element(0x7FE0, 0x0010, &[], Some(UNDEFINED));
        cut.extend(element(0xFFFE, 0xE000, &[0; 4], Some(1 << 30)));
        assert!(check(&cut, 0, false).is_err());
    }
}

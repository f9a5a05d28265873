//! JPEG baseline and extended sequential (8-bit, Huffman) — the JPEG of the DICOM transfer
//! syntaxes 1.2.840.10008.1.2.4.50 and .51 — decoded to the samples libjpeg gives by default:
//! its "islow" integer IDCT ([`idct`]), its "fancy" chroma upsampling ([`upsample`]), and no
//! colour conversion (the photometric interpretation says what the samples are; the caller
//! converts). pydicom (through Pillow), dcmtk and most viewers decode these files with
//! libjpeg(-turbo); the same samples from the same bytes are what let the app, the CLI and a
//! Python pipeline agree on every pixel. Progressive, lossless, hierarchical, arithmetic-coded
//! and 12-bit JPEG are refused by name.

mod huffman;
mod idct;
mod upsample;

use huffman::{Bits, Table};
use upsample::Plane;

/// A decoded frame (of the size the caller expected): `components` samples per pixel,
/// interleaved, row-major.
pub struct Image {
    pub components: usize,
    pub samples: Vec<u8>,
}

/// One component of the frame (SOF) and its quantised coefficients.
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant_table: usize,
    /// Blocks per row and rows of blocks allocated (whole MCUs).
    blocks_w: usize,
    blocks_h: usize,
    /// Samples of this component in the image (before upsampling).
    width: usize,
    height: usize,
    coefficients: Vec<[i16; 64]>,
    dc: i32,
    /// Whether a scan carried this component.
    scanned: bool,
}

struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
    quant: [Option<[u16; 64]>; 4],
    dc_tables: [Option<Table>; 4],
    ac_tables: [Option<Table>; 4],
    restart_interval: usize,
    width: usize,
    height: usize,
    components: Vec<Component>,
    mcus_x: usize,
    mcus_y: usize,
}

/// Decode one JPEG image whose size must be `expected` (width, height) — checked before any
/// memory is given to its pixels.
pub fn decode(data: &[u8], expected: (u32, u32)) -> Result<Image, String> {
    let mut d = Decoder {
        data,
        pos: 0,
        quant: [None; 4],
        dc_tables: [None, None, None, None],
        ac_tables: [None, None, None, None],
        restart_interval: 0,
        width: 0,
        height: 0,
        components: Vec::new(),
        mcus_x: 0,
        mcus_y: 0,
    };
    if data.get(..2) != Some(&[0xFF, 0xD8][..]) {
        return Err("not a JPEG stream (no SOI marker)".into());
    }
    d.pos = 2;
    d.segments(expected)?;
    if d.components.is_empty() {
        return Err("the JPEG stream has no frame header (SOF)".into());
    }
    if let Some(c) = d.components.iter().find(|c| !c.scanned) {
        return Err(format!("the JPEG stream holds no scan of component {}", c.id));
    }
    Ok(d.pixels())
}

impl Decoder<'_> {
    /// The next marker, skipping fill bytes.
    fn marker(&mut self) -> Result<u8, String> {
        while self.data.get(self.pos) == Some(&0xFF) && self.data.get(self.pos + 1) == Some(&0xFF) {
            self.pos += 1;
        }
        match self.data.get(self.pos..self.pos + 2) {
            Some(&[0xFF, m]) if m != 0 => {
                self.pos += 2;
                Ok(m)
            }
            Some(_) => Err(format!("a damaged JPEG stream (no marker at byte {})", self.pos)),
            None => Err("the JPEG stream ends early (truncated frame, no EOI)".into()),
        }
    }

    /// A marker segment's payload (after its 2-byte length).
    fn segment(&mut self) -> Result<&[u8], String> {
        let len = match self.data.get(self.pos..self.pos + 2) {
            Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
            None => return Err("the JPEG stream ends inside a marker segment".into()),
        };
        let body = self.data.get(self.pos + 2..self.pos + len).filter(|_| len >= 2).ok_or("the JPEG stream ends inside a marker segment")?;
        self.pos += len;
        Ok(body)
    }

    /// Marker segments up to EOI, decoding each scan as it comes.
    fn segments(&mut self, expected: (u32, u32)) -> Result<(), String> {
        loop {
            // A stream whose scans are all there but whose EOI is missing is read as libjpeg
            // reads it (with a warning there).
            if self.pos >= self.data.len() && self.components.iter().any(|c| c.scanned) {
                return Ok(());
            }
            match self.marker()? {
                0xD9 => return Ok(()),
                0xC0 | 0xC1 => {
                    let body = self.segment()?.to_vec();
                    self.frame(&body, expected)?;
                }
                m @ (0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) => return Err(format!("{} JPEG is not supported (only baseline and extended sequential, Huffman-coded)", sof_name(m))),
                0xC4 => {
                    let body = self.segment()?.to_vec();
                    self.huffman_tables(&body)?;
                }
                0xDB => {
                    let body = self.segment()?.to_vec();
                    self.quant_tables(&body)?;
                }
                0xDD => {
                    let body = self.segment()?;
                    self.restart_interval = match body {
                        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
                        _ => return Err("a short DRI segment".into()),
                    };
                }
                0xDA => {
                    let body = self.segment()?.to_vec();
                    self.scan(&body)?;
                }
                0xDC => return Err("JPEG streams whose height comes after the first scan (DNL) are not supported".into()),
                0xD0..=0xD7 => {} // a stray restart marker between scans
                _ => {
                    self.segment()?; // APPn, COM, …
                }
            }
        }
    }

    fn quant_tables(&mut self, mut body: &[u8]) -> Result<(), String> {
        while let [pq_tq, rest @ ..] = body {
            let (precision, id) = (pq_tq >> 4, usize::from(pq_tq & 15));
            let size = if precision == 0 { 64 } else { 128 };
            if id > 3 || rest.len() < size {
                return Err("a damaged quantisation table (DQT)".into());
            }
            let mut table = [0u16; 64];
            for k in 0..64 {
                let v = if precision == 0 { u16::from(rest[k]) } else { u16::from_be_bytes([rest[2 * k], rest[2 * k + 1]]) };
                table[usize::from(huffman::ZIGZAG[k])] = v;
            }
            self.quant[id] = Some(table);
            body = &rest[size..];
        }
        Ok(())
    }

    fn huffman_tables(&mut self, mut body: &[u8]) -> Result<(), String> {
        while body.len() >= 17 {
            let (class, id) = (body[0] >> 4, usize::from(body[0] & 15));
            let counts: [u8; 16] = body[1..17].try_into().unwrap();
            let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
            let symbols = body.get(17..17 + n).ok_or("a damaged Huffman table (DHT)")?.to_vec();
            let table = Table::new(&counts, symbols)?;
            match (class, id) {
                (0, 0..=3) => self.dc_tables[id] = Some(table),
                (1, 0..=3) => self.ac_tables[id] = Some(table),
                _ => return Err("a damaged Huffman table (DHT)".into()),
            }
            body = &body[17 + n..];
        }
        if body.is_empty() { Ok(()) } else { Err("a damaged Huffman table (DHT)".into()) }
    }

    /// The frame header (SOF0/SOF1): size, components and their sampling; the coefficients'
    /// memory once the size is the expected one.
    fn frame(&mut self, body: &[u8], expected: (u32, u32)) -> Result<(), String> {
        if !self.components.is_empty() {
            return Err("a JPEG stream with two frame headers".into());
        }
        let [precision, h1, h0, w1, w0, n, rest @ ..] = body else {
            return Err("a short frame header (SOF)".into());
        };
        if *precision != 8 {
            return Err(format!("{precision}-bit JPEG is not supported (8-bit only)"));
        }
        let (height, width) = (u16::from_be_bytes([*h1, *h0]), u16::from_be_bytes([*w1, *w0]));
        if (u32::from(width), u32::from(height)) != expected {
            return Err(format!(
                "the JPEG frame is {width} × {height}, the DICOM header says {} × {}",
                expected.0, expected.1
            ));
        }
        let n = usize::from(*n);
        if !(1..=4).contains(&n) || rest.len() < 3 * n {
            return Err(format!("a frame header with {n} components"));
        }
        let (width, height) = (usize::from(width), usize::from(height));
        let sampling: Vec<(u8, usize, usize, usize)> =
            rest.chunks_exact(3).take(n).map(|c| (c[0], usize::from(c[1] >> 4), usize::from(c[1] & 15), usize::from(c[2]))).collect();
        if sampling.iter().any(|&(_, h, v, q)| !(1..=4).contains(&h) || !(1..=4).contains(&v) || q > 3) {
            return Err("a frame header with sampling factors or table numbers out of range".into());
        }
        // A lone component is one block per MCU whatever its factors say.
        let single = n == 1;
        let hmax = if single { 1 } else { sampling.iter().map(|s| s.1).max().unwrap() };
        let vmax = if single { 1 } else { sampling.iter().map(|s| s.2).max().unwrap() };
        if sampling.iter().any(|&(_, h, v, _)| !single && (hmax % h != 0 || vmax % v != 0)) {
            return Err("fractional chroma sampling ratios are not supported".into());
        }
        self.width = width;
        self.height = height;
        self.mcus_x = width.div_ceil(8 * hmax);
        self.mcus_y = height.div_ceil(8 * vmax);
        self.components = sampling
            .into_iter()
            .map(|(id, h, v, quant_table)| {
                let (h, v) = if single { (1, 1) } else { (h, v) };
                let (blocks_w, blocks_h) = (self.mcus_x * h, self.mcus_y * v);
                Component {
                    id,
                    h,
                    v,
                    quant_table,
                    blocks_w,
                    blocks_h,
                    width: (width * h).div_ceil(hmax),
                    height: (height * v).div_ceil(vmax),
                    coefficients: vec![[0; 64]; blocks_w * blocks_h],
                    dc: 0,
                    scanned: false,
                }
            })
            .collect();
        Ok(())
    }

    /// One scan (SOS): its components' blocks, MCU by MCU, with restarts.
    fn scan(&mut self, body: &[u8]) -> Result<(), String> {
        if self.components.is_empty() {
            return Err("a scan before the frame header".into());
        }
        let n = usize::from(*body.first().ok_or("a short scan header (SOS)")?);
        let spec = body.get(1..1 + 2 * n + 3).ok_or("a short scan header (SOS)")?;
        let (ss, se, ah_al) = (spec[2 * n], spec[2 * n + 1], spec[2 * n + 2]);
        if ss != 0 || se != 63 || ah_al != 0 {
            return Err("a scan that is not sequential (progressive data in a baseline stream)".into());
        }
        let mut members = Vec::with_capacity(n);
        for c in spec[..2 * n].chunks_exact(2) {
            let index = self.components.iter().position(|k| k.id == c[0]).ok_or_else(|| format!("a scan of component {}, which the frame does not have", c[0]))?;
            let (dc, ac) = (usize::from(c[1] >> 4), usize::from(c[1] & 15));
            if dc > 3 || ac > 3 || self.dc_tables[dc].is_none() || self.ac_tables[ac].is_none() {
                return Err("a scan that uses a Huffman table the stream does not define".into());
            }
            if self.quant[self.components[index].quant_table].is_none() {
                return Err("a component whose quantisation table the stream does not define".into());
            }
            members.push((index, dc, ac));
        }
        if members.is_empty() || (n > 1 && members.iter().map(|m| self.components[m.0].h * self.components[m.0].v).sum::<usize>() > 10) {
            return Err("a scan with no components or more than 10 blocks per MCU".into());
        }
        for &(i, ..) in &members {
            self.components[i].dc = 0;
            self.components[i].scanned = true;
        }
        let mut bits = Bits::new(&self.data[self.pos..]);
        // A scan of one component covers its own blocks, one per MCU; an interleaved one, every
        // MCU with each component's h × v blocks.
        let (mcus_x, mcus_y) = if n == 1 {
            let c = &self.components[members[0].0];
            (c.width.div_ceil(8), c.height.div_ceil(8))
        } else {
            (self.mcus_x, self.mcus_y)
        };
        for mcu in 0..mcus_x * mcus_y {
            if self.restart_interval > 0 && mcu > 0 && mcu % self.restart_interval == 0 {
                bits.restart()?;
                for &(i, ..) in &members {
                    self.components[i].dc = 0;
                }
            }
            let (mx, my) = (mcu % mcus_x, mcu / mcus_x);
            for &(i, dc, ac) in &members {
                let (dc_table, ac_table) = (self.dc_tables[dc].as_ref().unwrap(), self.ac_tables[ac].as_ref().unwrap());
                let c = &mut self.components[i];
                let (bh, bv) = if n == 1 { (1, 1) } else { (c.h, c.v) };
                for by in 0..bv {
                    for bx in 0..bh {
                        let at = (my * bv + by) * c.blocks_w + mx * bh + bx;
                        huffman::block(&mut bits, dc_table, ac_table, &mut c.dc, &mut c.coefficients[at])?;
                    }
                }
            }
        }
        if bits.ended_early() {
            return Err("the entropy-coded data ends early (truncated or damaged frame)".into());
        }
        self.pos += bits.position();
        Ok(())
    }

    /// Every component through the IDCT, upsampled to the image's size, interleaved.
    fn pixels(self) -> Image {
        let (hmax, vmax) = (self.components.iter().map(|c| c.h).max().unwrap(), self.components.iter().map(|c| c.v).max().unwrap());
        let planes: Vec<Plane> = self
            .components
            .iter()
            .map(|c| {
                let full = self.samples(c);
                upsample::upsample(&full, hmax / c.h, vmax / c.v)
            })
            .collect();
        let n = planes.len();
        let mut samples = vec![0u8; self.width * self.height * n];
        for (k, plane) in planes.iter().enumerate() {
            for y in 0..self.height {
                let row = &plane.samples[y * plane.width..y * plane.width + self.width];
                for (x, &s) in row.iter().enumerate() {
                    samples[(y * self.width + x) * n + k] = s;
                }
            }
        }
        Image { components: n, samples }
    }

    /// A component's samples (its own size, before upsampling).
    fn samples(&self, c: &Component) -> Plane {
        let quant = self.quant[c.quant_table].as_ref().expect("checked at the scan");
        let stride = c.blocks_w * 8;
        let mut all = vec![0u8; stride * c.blocks_h * 8];
        for (at, block) in c.coefficients.iter().enumerate() {
            let (bx, by) = (at % c.blocks_w, at / c.blocks_w);
            idct::block(block, quant, &mut all[by * 8 * stride + bx * 8..], stride);
        }
        let samples = all.chunks_exact(stride).take(c.height).flat_map(|row| &row[..c.width]).copied().collect();
        Plane { width: c.width, height: c.height, samples }
    }
}

fn sof_name(marker: u8) -> &'static str {
    match marker {
        0xC2 | 0xC6 | 0xCA | 0xCE => "progressive",
        0xC3 | 0xC7 | 0xCB | 0xCF => "lossless",
        0xC5 | 0xCD => "hierarchical",
        _ => "arithmetic-coded",
    }
}

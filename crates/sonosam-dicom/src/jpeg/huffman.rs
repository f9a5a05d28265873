//! The entropy-coded data of a sequential Huffman JPEG: the bit reader (byte stuffing, markers,
//! restarts), the code tables (DHT), and one block's coefficients.

/// A Huffman table, as DHT defines it: how many codes of each length 1–16, and their symbols
/// in code order.
pub struct Table {
    /// Symbol and code length of every 9-bit prefix that starts a code of ≤ 9 bits.
    fast: Vec<(u8, u8)>,
    /// Largest code of each length (index 1–16), -1 where there is none.
    max_code: [i32; 18],
    /// Added to a code of each length to get the index of its symbol.
    offset: [i32; 17],
    symbols: Vec<u8>,
}

const FAST_BITS: u32 = 9;

impl Table {
    pub fn new(counts: &[u8; 16], symbols: Vec<u8>) -> Result<Self, String> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total != symbols.len() || total > 256 {
            return Err("a Huffman table whose code counts do not match its symbols".into());
        }
        let mut fast = vec![(0u8, 0u8); 1 << FAST_BITS];
        let mut max_code = [-1i32; 18];
        let mut offset = [0i32; 17];
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16u32 {
            let n = usize::from(counts[len as usize - 1]);
            offset[len as usize] = k as i32 - code;
            for _ in 0..n {
                if code >= 1 << len {
                    return Err("a Huffman table with more codes than its lengths allow".into());
                }
                if len <= FAST_BITS {
                    let shift = FAST_BITS - len;
                    for low in 0..(1 << shift) {
                        fast[((code as usize) << shift) | low] = (symbols[k], len as u8);
                    }
                }
                code += 1;
                k += 1;
            }
            max_code[len as usize] = if n > 0 { code - 1 } else { -1 };
            code <<= 1;
        }
        max_code[17] = i32::MAX;
        Ok(Self { fast, max_code, offset, symbols })
    }
}

/// Reads bits from entropy-coded data: `FF 00` is a data byte `FF`; a marker or the end of the
/// bytes ends the data, after which zero bits are read (as libjpeg does) and counted, so that a
/// segment that ends early is reported rather than decoded as zeros.
pub struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    acc: u64,
    count: u32,
    /// A marker (RSTn, EOI, …) stopped the data at `pos`.
    marker: Option<u8>,
    /// How many of the bits appended to `acc` were not data (they are its last ones).
    phantom: u32,
}

impl<'a> Bits<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0, acc: 0, count: 0, marker: None, phantom: 0 }
    }

    /// Whether bits past the end of the segment's data were read: a truncated or damaged frame.
    pub fn ended_early(&self) -> bool {
        self.phantom > self.count
    }

    /// Where the entropy-coded data ended (at its marker), once read.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn fill(&mut self) {
        while self.count <= 56 {
            let byte = if self.marker.is_some() || self.pos >= self.data.len() {
                self.phantom += 8;
                0
            } else if self.data[self.pos] != 0xFF {
                self.pos += 1;
                self.data[self.pos - 1]
            } else {
                match self.data.get(self.pos + 1) {
                    Some(0x00) => {
                        self.pos += 2;
                        0xFF
                    }
                    // Fill bytes (FF FF …) before a marker.
                    Some(0xFF) => {
                        self.pos += 1;
                        continue;
                    }
                    Some(&m) => {
                        self.marker = Some(m);
                        self.phantom += 8;
                        0
                    }
                    None => {
                        self.pos += 1;
                        self.phantom += 8;
                        0
                    }
                }
            };
            self.acc |= u64::from(byte) << (56 - self.count);
            self.count += 8;
        }
    }

    fn peek(&mut self, n: u32) -> u32 {
        if self.count < n {
            self.fill();
        }
        (self.acc >> (64 - n)) as u32
    }

    fn consume(&mut self, n: u32) {
        self.acc <<= n;
        self.count -= n;
    }

    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        let v = self.peek(n);
        self.consume(n);
        v
    }

    /// A Huffman-coded symbol.
    pub fn symbol(&mut self, table: &Table) -> Result<u8, String> {
        let (symbol, len) = table.fast[self.peek(FAST_BITS) as usize];
        if len > 0 {
            self.consume(u32::from(len));
            return Ok(symbol);
        }
        let code16 = self.peek(16) as i32;
        for len in FAST_BITS + 1..=16 {
            let code = code16 >> (16 - len);
            if code <= table.max_code[len as usize] {
                self.consume(len);
                let index = (code + table.offset[len as usize]) as usize;
                return table.symbols.get(index).copied().ok_or_else(|| "a corrupt Huffman code".to_string());
            }
        }
        Err("a corrupt Huffman code in the entropy-coded data".into())
    }

    /// `n` more bits as the signed value they code (JPEG's EXTEND).
    pub fn signed(&mut self, n: u8) -> i32 {
        let n = u32::from(n.min(16));
        let v = self.bits(n) as i32;
        if n > 0 && v < 1 << (n - 1) { v - (1 << n) + 1 } else { v }
    }

    /// At a restart interval's end: the next marker must be RSTn; the bit buffer is emptied.
    pub fn restart(&mut self) -> Result<(), String> {
        if self.ended_early() {
            return Err("the entropy-coded data ends before its restart interval does".into());
        }
        self.acc = 0;
        self.count = 0;
        self.phantom = 0;
        if self.marker.is_none() {
            // Skip to the marker (the rest of the last byte's bits are padding).
            while self.pos + 1 < self.data.len() && !(self.data[self.pos] == 0xFF && !matches!(self.data[self.pos + 1], 0x00 | 0xFF)) {
                self.pos += 1;
            }
            self.marker = self.data.get(self.pos + 1).copied().filter(|_| self.data[self.pos] == 0xFF);
        }
        match self.marker.take() {
            Some(0xD0..=0xD7) => {
                self.pos += 2;
                Ok(())
            }
            Some(m) => Err(format!("expected a restart marker, found FF{m:02X}")),
            None => Err("the entropy-coded data ends early (truncated frame)".into()),
        }
    }
}

/// JPEG's zig-zag order: the natural (row-major) index of the k-th coefficient, with 16 extra
/// entries at 63 so that a damaged run cannot index past the block (as libjpeg does).
pub const ZIGZAG: [u8; 80] = {
    let mut z = [63u8; 80];
    let (mut k, mut s) = (0, 0);
    while s < 15 {
        let lo = if s > 7 { s - 7 } else { 0 };
        let hi = if s < 7 { s } else { 7 };
        let mut i = 0;
        while i <= hi - lo {
            // Even diagonals run from bottom-left to top-right.
            let row = if s % 2 == 0 { hi - i } else { lo + i };
            z[k] = (row * 8 + (s - row)) as u8;
            k += 1;
            i += 1;
        }
        s += 1;
    }
    z
};

/// One block's quantised coefficients (natural order) of a sequential scan; `dc` is the
/// component's DC predictor.
pub fn block(bits: &mut Bits, dc_table: &Table, ac_table: &Table, dc: &mut i32, out: &mut [i16; 64]) -> Result<(), String> {
    *out = [0; 64];
    let t = bits.symbol(dc_table)?;
    if t > 11 {
        return Err(format!("a DC difference of {t} bits (at most 11 in 8-bit JPEG)"));
    }
    *dc = dc.wrapping_add(bits.signed(t));
    out[0] = *dc as i16;
    let mut k = 1usize;
    while k < 64 {
        let rs = bits.symbol(ac_table)?;
        let (run, size) = (usize::from(rs >> 4), rs & 15);
        if size == 0 {
            if run != 15 {
                break;
            }
            k += 16;
            continue;
        }
        k += run;
        out[usize::from(ZIGZAG[k.min(79)])] = bits.signed(size) as i16;
        k += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zigzag_is_jpegs() {
        assert_eq!(&ZIGZAG[..16], &[0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5]);
        assert_eq!(&ZIGZAG[56..64], &[53, 60, 61, 54, 47, 55, 62, 63]);
        let mut seen = ZIGZAG[..64].to_vec();
        seen.sort_unstable();
        assert_eq!(seen, (0..64).collect::<Vec<u8>>());
    }

    /// Found by the `dicom` fuzz target: counts that claim more codes of a length than there are
    /// (3 codes of 1 bit) are refused, not written past the lookup table.
    #[test]
    fn overfull_tables_are_refused() {
        let mut counts = [0u8; 16];
        counts[0] = 3;
        assert!(Table::new(&counts, vec![1, 2, 3]).is_err());
        let mut counts = [0u8; 16];
        counts[1] = 2; // 00, 01
        counts[2] = 5; // 100 … 111 are 4 codes, not 5
        assert!(Table::new(&counts, (0..7).collect()).is_err());
        counts[2] = 4;
        assert!(Table::new(&counts, (0..6).collect()).is_ok());
    }

    #[test]
    fn codes_decode_with_stuffing_and_sign() {
        // Codes: "0" → 5 (1 bit), "10" → 7, "110" → 9.
        let t = Table::new(&[1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], vec![5, 7, 9]).unwrap();
        // 110 | 0 | 10 | then 0b11 as the 2-bit value 3, then 0b0 as a 1-bit value -1 → byte 0b1100_1011, 0b0xxx…
        let mut b = Bits::new(&[0b1100_1011, 0b0111_1111, 0xFF, 0x00]);
        assert_eq!(b.symbol(&t).unwrap(), 9);
        assert_eq!(b.symbol(&t).unwrap(), 5);
        assert_eq!(b.symbol(&t).unwrap(), 7);
        assert_eq!(b.signed(2), 3);
        assert_eq!(b.signed(1), -1);
        assert_eq!(b.bits(7), 0x7F);
        assert_eq!(b.bits(8), 0xFF, "FF 00 is the byte FF");
        assert!(!b.ended_early());
        b.bits(16);
        assert!(b.ended_early());
    }
}

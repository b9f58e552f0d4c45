//! One model version's serving data as a single flat byte image: what every backend of a server
//! maps read-only from one file (`pg::model_files`), so the page cache holds one copy however
//! many connections serve.
//!
//! Layout (native byte order; the magic number fails to match on another byte order):
//! a header of 64 words, then the sections below, each starting on a 64-byte boundary, then a
//! CRC-32 of everything before it. Item ids are stored once (one byte string and its offsets)
//! and found through an open-addressing hash table, so a backend builds no map of its own.
//! Every index stored in the image is checked when it is parsed: accessors cannot go out of
//! bounds on a file that passed `ModelImage::parse`.

use std::io::{self, Write};

use bytemuck::Pod;

use crate::item_item::{ItemItem, ItemItemRef};
use crate::serving::normalize_rows;

const MAGIC: u64 = u64::from_le_bytes(*b"PPMODEL1");
/// Bumped whenever the layout changes: an older file is rebuilt, never misread.
pub const FORMAT_VERSION: u64 = 1;
const HEADER_WORDS: usize = 64;
const ALIGN: usize = 64;
const EMPTY_SLOT: u32 = u32::MAX;

// Header words.
const W_MAGIC: usize = 0;
const W_VERSION: usize = 1;
const W_MODEL_ID: usize = 2;
const W_STAMP: usize = 3;
const W_N: usize = 4;
const W_K: usize = 5;
const W_HAS_ITEM_ITEM: usize = 6;
const W_NNZ: usize = 7;
const W_ID_BYTES: usize = 8;
const W_SLOTS: usize = 9;
const W_ALPHA: usize = 10;
const W_REGULARIZATION: usize = 11;
const W_REG_EXPONENT: usize = 12;
const W_MEAN_USER_ITEMS: usize = 13;
const W_WINDOW: usize = 14;
const W_AS_OF: usize = 15;
const W_TOTAL: usize = 16;
/// (offset, length in bytes) of each section, from this word on.
const W_SECTIONS: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    IdOffsets,
    IdBytes,
    IdTable,
    Factors,
    Normalized,
    Yty,
    Popularity,
    PopularityOrder,
    NeighborOffsets,
    NeighborItems,
    NeighborWeights,
}
const SECTIONS: usize = 11;

/// The scalars of a model version: who it is and how serving folds users in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ModelInfo {
    pub model_id: i64,
    /// The model row's created_at in microseconds: with model_id, the version's identity (a
    /// re-created extension reuses model ids, never both).
    pub stamp: i64,
    /// Factors per item (0: no factors: an item-item or popularity model).
    pub k: usize,
    pub alpha: f32,
    /// ALS's regularization, its frequency-scaling exponent and the mean number of items per
    /// training user: a folded-in user gets the λ a trained user with as many items got.
    pub regularization: f32,
    pub reg_exponent: f32,
    pub mean_user_items: f64,
    pub window_seconds: Option<f64>,
    /// Unix seconds of the training's as_of.
    pub as_of: f64,
}

/// A model version as read from its tables, before it is laid out.
pub struct ModelParts {
    pub info: ModelInfo,
    pub item_ids: Vec<String>,
    /// n × k, row i is item i (empty without factors).
    pub factors: Vec<f32>,
    pub popularity: Vec<f32>,
    pub item_item: Option<ItemItem>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("not a model image of this format (magic, version or byte order differs)")]
    Format,
    #[error("the image is {actual} bytes, its header says {expected}")]
    Length { expected: u64, actual: u64 },
    #[error("the image's checksum does not match its contents")]
    Checksum,
    #[error("the image's {0} section is malformed")]
    Malformed(&'static str),
}

/// FNV-1a: stable across builds and processes (the table is written by one backend and read by
/// all), which std's hasher does not promise.
fn hash_id(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn table_slots(n: usize) -> usize {
    (2 * n).next_power_of_two().max(8)
}

fn padded(len: usize) -> usize {
    len.div_ceil(ALIGN) * ALIGN
}

/// Section lengths in bytes, in `Section` order.
fn section_lengths(n: usize, k: usize, nnz: Option<usize>, id_bytes: usize) -> [usize; SECTIONS] {
    let slots = table_slots(n);
    let nnz_or_0 = nnz.unwrap_or(0);
    [
        (n + 1) * 8,
        id_bytes,
        slots * 4,
        n * k * 4,
        n * k * 4,
        k * k * 4,
        n * 4,
        n * 4,
        if nnz.is_some() { (n + 1) * 8 } else { 0 },
        nnz_or_0 * 4,
        nnz_or_0 * 4,
    ]
}

fn layout(lengths: &[usize; SECTIONS]) -> ([(usize, usize); SECTIONS], usize) {
    let mut at = HEADER_WORDS * 8;
    let mut out = [(0, 0); SECTIONS];
    for (s, &len) in lengths.iter().enumerate() {
        out[s] = (at, len);
        at += padded(len);
    }
    // The checksum word.
    (out, at + 8)
}

/// A writer that counts bytes and checksums them.
struct Checked<W> {
    out: W,
    written: usize,
    crc: crc32fast::Hasher,
}

impl<W: Write> Checked<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.written += bytes.len();
        self.out.write_all(bytes)
    }

    fn pad_to(&mut self, at: usize) -> io::Result<()> {
        const ZEROS: [u8; ALIGN] = [0; ALIGN];
        while self.written < at {
            let step = (at - self.written).min(ALIGN);
            self.put(&ZEROS[..step])?;
        }
        Ok(())
    }

    fn put_pod<T: Pod>(&mut self, values: &[T]) -> io::Result<()> {
        self.put(bytemuck::cast_slice(values))
    }
}

/// Writes the image of `parts` to `out`; returns its length. Derived data is computed here,
/// once per server: YᵀY + reg·I, unit-length factors, the popularity order and the id table.
/// Neighbour indexes out of range (a hand-edited table row) become weight 0 on item 0.
pub fn write(parts: &ModelParts, out: impl Write) -> io::Result<usize> {
    let n = parts.item_ids.len();
    let k = parts.info.k;
    if parts.factors.len() != n * k || parts.popularity.len() != n {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "factors or popularity do not match the items",
        ));
    }
    let id_bytes: usize = parts.item_ids.iter().map(String::len).sum();
    let nnz = parts.item_item.as_ref().map(|b| b.items.len());
    let lengths = section_lengths(n, k, nnz, id_bytes);
    let (sections, total) = layout(&lengths);

    let mut header = [0u64; HEADER_WORDS];
    header[W_MAGIC] = MAGIC;
    header[W_VERSION] = FORMAT_VERSION;
    header[W_MODEL_ID] = parts.info.model_id as u64;
    header[W_STAMP] = parts.info.stamp as u64;
    header[W_N] = n as u64;
    header[W_K] = k as u64;
    header[W_HAS_ITEM_ITEM] = nnz.is_some() as u64;
    header[W_NNZ] = nnz.unwrap_or(0) as u64;
    header[W_ID_BYTES] = id_bytes as u64;
    header[W_SLOTS] = table_slots(n) as u64;
    header[W_ALPHA] = (parts.info.alpha as f64).to_bits();
    header[W_REGULARIZATION] = (parts.info.regularization as f64).to_bits();
    header[W_REG_EXPONENT] = (parts.info.reg_exponent as f64).to_bits();
    header[W_MEAN_USER_ITEMS] = parts.info.mean_user_items.to_bits();
    header[W_WINDOW] = parts.info.window_seconds.unwrap_or(f64::NAN).to_bits();
    header[W_AS_OF] = parts.info.as_of.to_bits();
    header[W_TOTAL] = total as u64;
    for (s, &(offset, len)) in sections.iter().enumerate() {
        header[W_SECTIONS + 2 * s] = offset as u64;
        header[W_SECTIONS + 2 * s + 1] = len as u64;
    }

    let mut w = Checked {
        out: io::BufWriter::with_capacity(1 << 20, out),
        written: 0,
        crc: crc32fast::Hasher::new(),
    };
    w.put_pod(&header)?;
    let start = |w: &mut Checked<_>, s: Section| w.pad_to(sections[s as usize].0);

    start(&mut w, Section::IdOffsets)?;
    let mut at = 0u64;
    w.put_pod(&[at])?;
    for id in &parts.item_ids {
        at += id.len() as u64;
        w.put_pod(&[at])?;
    }
    start(&mut w, Section::IdBytes)?;
    for id in &parts.item_ids {
        w.put(id.as_bytes())?;
    }
    start(&mut w, Section::IdTable)?;
    let slots = table_slots(n);
    let mut table = vec![EMPTY_SLOT; slots];
    for (i, id) in parts.item_ids.iter().enumerate() {
        let mut s = hash_id(id.as_bytes()) as usize & (slots - 1);
        while table[s] != EMPTY_SLOT {
            s = (s + 1) & (slots - 1);
        }
        table[s] = i as u32;
    }
    w.put_pod(&table)?;
    drop(table);

    start(&mut w, Section::Factors)?;
    w.put_pod(&parts.factors)?;
    start(&mut w, Section::Normalized)?;
    if k > 0 {
        for rows in parts.factors.chunks(k * 4096) {
            w.put_pod(&normalize_rows(rows, k))?;
        }
    }
    start(&mut w, Section::Yty)?;
    let y = ndarray::ArrayView2::from_shape((n, k), &parts.factors)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut yty = y.t().dot(&y);
    for j in 0..k {
        yty[[j, j]] += parts.info.regularization;
    }
    let yty: Vec<f32> = yty.iter().copied().collect();
    w.put_pod(&yty)?;

    start(&mut w, Section::Popularity)?;
    w.put_pod(&parts.popularity)?;
    start(&mut w, Section::PopularityOrder)?;
    let mut order: Vec<u32> = (0..n as u32).collect();
    let pop = &parts.popularity;
    order.sort_by(|&a, &b| pop[b as usize].total_cmp(&pop[a as usize]).then(a.cmp(&b)));
    w.put_pod(&order)?;

    if let Some(b) = &parts.item_item {
        if b.offsets.len() != n + 1 || b.weights.len() != b.items.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "item-item rows do not match the items",
            ));
        }
        start(&mut w, Section::NeighborOffsets)?;
        w.put_pod(&b.offsets)?;
        start(&mut w, Section::NeighborItems)?;
        let items: Vec<u32> = b
            .items
            .iter()
            .map(|&j| if (j as usize) < n { j } else { 0 })
            .collect();
        w.put_pod(&items)?;
        start(&mut w, Section::NeighborWeights)?;
        let weights: Vec<f32> = b
            .items
            .iter()
            .zip(&b.weights)
            .map(|(&j, &x)| if (j as usize) < n { x } else { 0.0 })
            .collect();
        w.put_pod(&weights)?;
    }
    w.pad_to(total - 8)?;
    let crc = w.crc.clone().finalize() as u64;
    w.out.write_all(&crc.to_ne_bytes())?;
    w.out.flush()?;
    Ok(total)
}

/// Bytes on an 8-byte boundary (what the sections' casts need) held in memory: an image that
/// could not be written to a file, and the unit tests.
pub struct AlignedBytes {
    words: Vec<u64>,
    len: usize,
}

impl AlignedBytes {
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }
}

/// The image of `parts` in memory.
pub fn to_memory(parts: &ModelParts) -> io::Result<AlignedBytes> {
    let mut bytes = Vec::new();
    write(parts, &mut bytes)?;
    Ok(AlignedBytes::new(&bytes))
}

/// A parsed, checked image over its bytes (a mapped file or `AlignedBytes`).
pub struct ModelImage<B> {
    bytes: B,
    pub info: ModelInfo,
    n: usize,
    has_item_item: bool,
    sections: [(usize, usize); SECTIONS],
}

impl<B: AsRef<[u8]>> ModelImage<B> {
    /// Checks the header, the length, the checksum and every stored index.
    pub fn parse(bytes: B) -> Result<Self, ImageError> {
        let all = bytes.as_ref();
        if all.len() < HEADER_WORDS * 8 + 8 {
            return Err(ImageError::Format);
        }
        let header: &[u64] = bytemuck::try_cast_slice(&all[..HEADER_WORDS * 8])
            .map_err(|_| ImageError::Malformed("header"))?;
        if header[W_MAGIC] != MAGIC || header[W_VERSION] != FORMAT_VERSION {
            return Err(ImageError::Format);
        }
        if header[W_TOTAL] != all.len() as u64 {
            return Err(ImageError::Length {
                expected: header[W_TOTAL],
                actual: all.len() as u64,
            });
        }
        let (body, tail) = all.split_at(all.len() - 8);
        let stored = u64::from_ne_bytes(tail.try_into().expect("8 bytes"));
        if crc32fast::hash(body) as u64 != stored {
            return Err(ImageError::Checksum);
        }
        let word = |w: usize| header[w] as usize;
        let (n, k) = (word(W_N), word(W_K));
        let has_item_item = header[W_HAS_ITEM_ITEM] == 1;
        let nnz = has_item_item.then(|| word(W_NNZ));
        if word(W_SLOTS) != table_slots(n) {
            return Err(ImageError::Malformed("id table"));
        }
        let expected = layout(&section_lengths(n, k, nnz, word(W_ID_BYTES)));
        let mut sections = [(0, 0); SECTIONS];
        for (s, section) in sections.iter_mut().enumerate() {
            *section = (word(W_SECTIONS + 2 * s), word(W_SECTIONS + 2 * s + 1));
        }
        if sections != expected.0 || expected.1 != all.len() {
            return Err(ImageError::Malformed("section table"));
        }
        let float = |w: usize| f64::from_bits(header[w]);
        let window = float(W_WINDOW);
        let image = ModelImage {
            info: ModelInfo {
                model_id: header[W_MODEL_ID] as i64,
                stamp: header[W_STAMP] as i64,
                k,
                alpha: float(W_ALPHA) as f32,
                regularization: float(W_REGULARIZATION) as f32,
                reg_exponent: float(W_REG_EXPONENT) as f32,
                mean_user_items: float(W_MEAN_USER_ITEMS),
                window_seconds: (!window.is_nan()).then_some(window),
                as_of: float(W_AS_OF),
            },
            bytes,
            n,
            has_item_item,
            sections,
        };
        image.check_indexes()?;
        Ok(image)
    }

    fn check_indexes(&self) -> Result<(), ImageError> {
        let n = self.n;
        let monotone = |offsets: &[u64], end: usize| {
            offsets.first() == Some(&0)
                && offsets.windows(2).all(|w| w[0] <= w[1])
                && offsets.last().is_some_and(|&e| e as usize == end)
        };
        let ids = self.section::<u8>(Section::IdBytes);
        let id_offsets = self.section::<u64>(Section::IdOffsets);
        if !monotone(id_offsets, ids.len()) {
            return Err(ImageError::Malformed("item id offsets"));
        }
        if (0..n).any(|i| std::str::from_utf8(self.id_bytes(i as u32)).is_err()) {
            return Err(ImageError::Malformed("item ids"));
        }
        let table = self.section::<u32>(Section::IdTable);
        let filled = table.iter().filter(|&&s| s != EMPTY_SLOT).count();
        if filled != n || table.iter().any(|&s| s != EMPTY_SLOT && s as usize >= n) {
            return Err(ImageError::Malformed("id table"));
        }
        let order = self.popularity_order();
        if order.len() != n || order.iter().any(|&i| i as usize >= n) {
            return Err(ImageError::Malformed("popularity order"));
        }
        if self.has_item_item {
            let items = self.section::<u32>(Section::NeighborItems);
            if !monotone(self.section::<u64>(Section::NeighborOffsets), items.len())
                || items.iter().any(|&j| j as usize >= n)
            {
                return Err(ImageError::Malformed("neighbours"));
            }
        }
        Ok(())
    }

    fn section<T: Pod>(&self, s: Section) -> &[T] {
        let (at, len) = self.sections[s as usize];
        // Sections start on 64-byte boundaries of 8-byte aligned storage: the cast holds.
        bytemuck::cast_slice(&self.bytes.as_ref()[at..at + len])
    }

    /// The size of the image in bytes.
    pub fn byte_len(&self) -> usize {
        self.bytes.as_ref().len()
    }

    pub fn n_items(&self) -> usize {
        self.n
    }

    fn id_bytes(&self, i: u32) -> &[u8] {
        let offsets = self.section::<u64>(Section::IdOffsets);
        let (a, b) = (
            offsets[i as usize] as usize,
            offsets[i as usize + 1] as usize,
        );
        &self.section::<u8>(Section::IdBytes)[a..b]
    }

    /// Item i's id.
    pub fn item_id(&self, i: u32) -> &str {
        // Checked to be UTF-8 by parse.
        std::str::from_utf8(self.id_bytes(i)).unwrap_or_default()
    }

    /// The index of an item id, None when the model does not know it.
    pub fn item_index(&self, id: &str) -> Option<u32> {
        let table = self.section::<u32>(Section::IdTable);
        let mask = table.len() - 1;
        let mut s = hash_id(id.as_bytes()) as usize & mask;
        loop {
            let i = table[s];
            if i == EMPTY_SLOT {
                return None;
            }
            if self.id_bytes(i) == id.as_bytes() {
                return Some(i);
            }
            s = (s + 1) & mask;
        }
    }

    /// n × k item factors, row i is item i (empty without factors).
    pub fn factors(&self) -> &[f32] {
        self.section(Section::Factors)
    }

    /// Item i's factors.
    pub fn row(&self, i: u32) -> &[f32] {
        let k = self.info.k;
        &self.factors()[i as usize * k..(i as usize + 1) * k]
    }

    /// The factors scaled to unit length (cosine similarity).
    pub fn normalized(&self) -> &[f32] {
        self.section(Section::Normalized)
    }

    /// YᵀY + reg·I (k × k): the fixed part of every fold-in.
    pub fn yty(&self) -> &[f32] {
        self.section(Section::Yty)
    }

    pub fn popularity(&self) -> &[f32] {
        self.section(Section::Popularity)
    }

    /// Item indexes by popularity, most popular first (ties by index).
    pub fn popularity_order(&self) -> &[u32] {
        self.section(Section::PopularityOrder)
    }

    /// An item-item model's weights (EASE, RP3beta, blends); None for ALS and popularity.
    pub fn item_item(&self) -> Option<ItemItemRef<'_>> {
        self.has_item_item.then(|| ItemItemRef {
            n_items: self.n,
            offsets: self.section(Section::NeighborOffsets),
            items: self.section(Section::NeighborItems),
            weights: self.section(Section::NeighborWeights),
        })
    }

    /// Whether users are vectors of factors (ALS): item-item and popularity models score
    /// from the user's history instead.
    pub fn has_factors(&self) -> bool {
        self.info.k > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(k: usize) -> ModelInfo {
        ModelInfo {
            model_id: 7,
            stamp: 1_700_000_000_000_000,
            k,
            alpha: 2.0,
            regularization: 0.1,
            reg_exponent: 0.5,
            mean_user_items: 3.25,
            window_seconds: None,
            as_of: 1.7e9,
        }
    }

    fn als_parts(n: usize, k: usize) -> ModelParts {
        ModelParts {
            info: info(k),
            item_ids: (0..n).map(|i| format!("item-{i}-é")).collect(),
            factors: (0..n * k)
                .map(|x| ((x * 37 % 101) as f32 - 50.0) / 7.0)
                .collect(),
            popularity: (0..n).map(|i| (i * 13 % 17) as f32).collect(),
            item_item: None,
        }
    }

    #[test]
    fn an_als_image_reads_back_what_was_written() {
        let parts = als_parts(1000, 8);
        let bytes = to_memory(&parts).unwrap();
        let image = ModelImage::parse(bytes).unwrap();
        assert_eq!(image.info, parts.info);
        assert_eq!(image.n_items(), 1000);
        assert_eq!(image.factors(), &parts.factors[..]);
        assert_eq!(image.row(3), &parts.factors[24..32]);
        assert_eq!(image.normalized(), &normalize_rows(&parts.factors, 8)[..]);
        assert_eq!(image.popularity(), &parts.popularity[..]);
        for (i, id) in parts.item_ids.iter().enumerate() {
            assert_eq!(image.item_id(i as u32), id);
            assert_eq!(image.item_index(id), Some(i as u32));
        }
        assert_eq!(image.item_index("item-1000-é"), None);
        assert_eq!(image.item_index(""), None);
        // YᵀY + reg·I, symmetric, reg on the diagonal.
        let yty = image.yty();
        let direct: f32 = (0..1000)
            .map(|i| parts.factors[i * 8] * parts.factors[i * 8 + 1])
            .sum();
        assert!((yty[1] - direct).abs() < 1e-2 * direct.abs().max(1.0));
        assert_eq!(yty[1], yty[8]);
        // Popularity order: most popular first, ties by index.
        let order = image.popularity_order();
        assert!(order.windows(2).all(|w| parts.popularity[w[0] as usize]
            > parts.popularity[w[1] as usize]
            || (parts.popularity[w[0] as usize] == parts.popularity[w[1] as usize]
                && w[0] < w[1])));
        assert!(image.item_item().is_none());
        assert!(image.has_factors());
    }

    #[test]
    fn an_item_item_image_keeps_its_weights_and_drops_bad_indexes() {
        let b = ItemItem::from_rows(vec![
            (vec![1, 2], vec![0.5, -0.25]),
            (vec![], vec![]),
            (vec![0, 9], vec![1.5, 3.0]),
        ]);
        let parts = ModelParts {
            info: ModelInfo {
                k: 0,
                window_seconds: Some(86400.0),
                ..info(0)
            },
            item_ids: vec!["a".into(), "b".into(), "c".into()],
            factors: Vec::new(),
            popularity: vec![1.0, 3.0, 2.0],
            item_item: Some(b),
        };
        let image = ModelImage::parse(to_memory(&parts).unwrap()).unwrap();
        assert_eq!(image.info.window_seconds, Some(86400.0));
        let w = image.item_item().unwrap();
        assert_eq!(w.row(0), (&[1u32, 2][..], &[0.5f32, -0.25][..]));
        assert!(w.row(1).0.is_empty());
        // Index 9 is out of range: kept as weight 0 on item 0.
        assert_eq!(w.row(2), (&[0u32, 0][..], &[1.5f32, 0.0][..]));
        assert_eq!(image.popularity_order(), &[1, 2, 0]);
        assert!(!image.has_factors());
        assert!(image.factors().is_empty());
    }

    #[test]
    fn damaged_images_are_refused() {
        let parts = als_parts(50, 4);
        let mut bytes = Vec::new();
        write(&parts, &mut bytes).unwrap();
        let parse = |b: &[u8]| ModelImage::parse(AlignedBytes::new(b)).map(|_| ());
        assert_eq!(parse(&bytes), Ok(()));
        // One flipped bit anywhere: the checksum.
        for at in [600, bytes.len() / 2, bytes.len() - 9] {
            let mut bad = bytes.clone();
            bad[at] ^= 1;
            assert_eq!(parse(&bad), Err(ImageError::Checksum), "byte {at}");
        }
        // Cut short (a crash while writing), or nothing at all.
        assert!(matches!(
            parse(&bytes[..bytes.len() - 64]),
            Err(ImageError::Length { .. })
        ));
        assert_eq!(parse(&[]), Err(ImageError::Format));
        assert_eq!(parse(&vec![0u8; 4096]), Err(ImageError::Format));
        // Another format version.
        let mut other = bytes.clone();
        other[8] = 99;
        assert_eq!(parse(&other), Err(ImageError::Format));
    }

    #[test]
    fn an_empty_model_is_an_image_too() {
        let parts = ModelParts {
            info: info(0),
            item_ids: Vec::new(),
            factors: Vec::new(),
            popularity: Vec::new(),
            item_item: None,
        };
        let image = ModelImage::parse(to_memory(&parts).unwrap()).unwrap();
        assert_eq!(image.n_items(), 0);
        assert_eq!(image.item_index("x"), None);
        assert!(image.popularity_order().is_empty());
    }

    #[test]
    fn colliding_ids_are_all_found() {
        // 20,000 ids in a table of 65,536 slots: many share a probe run.
        let n = 20_000;
        let parts = ModelParts {
            item_ids: (0..n).map(|i| format!("{i:x}")).collect(),
            factors: Vec::new(),
            popularity: vec![0.0; n],
            ..als_parts(0, 0)
        };
        let image = ModelImage::parse(to_memory(&parts).unwrap()).unwrap();
        for i in (0..n).step_by(7) {
            assert_eq!(image.item_index(&format!("{i:x}")), Some(i as u32));
        }
        assert_eq!(image.item_index("zz"), None);
    }
}

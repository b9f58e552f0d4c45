//! Compressed sparse rows: the user × item interaction matrix and its transpose.

/// A sparse matrix in CSR form with sorted column indexes per row and no duplicates.
#[derive(Debug, Clone, PartialEq)]
pub struct Csr {
    pub n_rows: usize,
    pub n_cols: usize,
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub data: Vec<f32>,
}

impl Csr {
    /// Builds from (row, col, value) triplets; repeated (row, col) pairs are summed.
    /// Panics only on indexes outside the shape (a caller bug, checked by the callers' maps).
    pub fn from_triplets(
        n_rows: usize,
        n_cols: usize,
        rows: &[u32],
        cols: &[u32],
        vals: &[f32],
    ) -> Csr {
        assert!(rows.len() == cols.len() && cols.len() == vals.len());
        let mut counts = vec![0usize; n_rows + 1];
        for &r in rows {
            counts[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut indices = vec![0u32; rows.len()];
        let mut data = vec![0f32; rows.len()];
        for k in 0..rows.len() {
            let r = rows[k] as usize;
            assert!((cols[k] as usize) < n_cols, "column index out of range");
            indices[next[r]] = cols[k];
            data[next[r]] = vals[k];
            next[r] += 1;
        }
        // Sort each row by column and merge duplicates.
        let mut out_ptr = vec![0usize; n_rows + 1];
        let mut out_idx = Vec::with_capacity(indices.len());
        let mut out_val = Vec::with_capacity(indices.len());
        let mut pairs: Vec<(u32, f32)> = Vec::new();
        for r in 0..n_rows {
            pairs.clear();
            pairs.extend(
                indices[counts[r]..counts[r + 1]]
                    .iter()
                    .copied()
                    .zip(data[counts[r]..counts[r + 1]].iter().copied()),
            );
            pairs.sort_unstable_by_key(|p| p.0);
            for &(c, v) in &pairs {
                if out_idx.len() > out_ptr[r] && *out_idx.last().unwrap() == c {
                    *out_val.last_mut().unwrap() += v;
                } else {
                    out_idx.push(c);
                    out_val.push(v);
                }
            }
            out_ptr[r + 1] = out_idx.len();
        }
        Csr {
            n_rows,
            n_cols,
            indptr: out_ptr,
            indices: out_idx,
            data: out_val,
        }
    }

    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[r], self.indptr[r + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// The transpose, also with sorted rows.
    pub fn transpose(&self) -> Csr {
        let mut counts = vec![0usize; self.n_cols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for i in 0..self.n_cols {
            counts[i + 1] += counts[i];
        }
        let mut next = counts.clone();
        let mut indices = vec![0u32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        for r in 0..self.n_rows {
            let (cols, vals) = self.row(r);
            for (&c, &v) in cols.iter().zip(vals) {
                let slot = &mut next[c as usize];
                indices[*slot] = r as u32;
                data[*slot] = v;
                *slot += 1;
            }
        }
        Csr {
            n_rows: self.n_cols,
            n_cols: self.n_rows,
            indptr: counts,
            indices,
            data,
        }
    }

    /// Bytes held, for memory budgets.
    pub fn heap_bytes(&self) -> usize {
        self.indptr.len() * 8 + self.indices.len() * 4 + self.data.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triplets_sum_duplicates_and_sort() {
        let m = Csr::from_triplets(
            3,
            4,
            &[2, 0, 0, 2, 0],
            &[1, 3, 0, 1, 3],
            &[1.0, 2.0, 3.0, 4.0, 5.0],
        );
        assert_eq!(m.indptr, vec![0, 2, 2, 3]);
        assert_eq!(m.indices, vec![0, 3, 1]);
        assert_eq!(m.data, vec![3.0, 7.0, 5.0]);
        let t = m.transpose();
        assert_eq!(t.n_rows, 4);
        assert_eq!(t.row(1), (&[2u32][..], &[5.0f32][..]));
        assert_eq!(t.row(3), (&[0u32][..], &[7.0f32][..]));
        assert_eq!(t.transpose(), m);
    }
}

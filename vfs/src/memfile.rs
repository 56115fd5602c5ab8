//! Journals and temporary files, in memory.
//!
//! The store commits atomically, so a rollback journal never has to survive
//! a crash: it only serves ROLLBACK and statement rollback inside one
//! connection. Each open handle has its own buffer, nothing is shared by
//! name, and `xAccess` reports no journal as existing, so SQLite never takes
//! another connection's journal for a hot one and never "recovers" from it.

/// An in-memory file.
#[derive(Debug, Default)]
pub struct MemFile {
    data: Vec<u8>,
}

/// Largest in-memory file (SQLite's own limit on a journal is far lower in
/// practice; this guards against absurd offsets from a broken caller).
pub const MAX_MEM_FILE: u64 = 1 << 40;

impl MemFile {
    /// Reads into `buf` from `offset`; returns the bytes read (the rest of
    /// `buf` is zero-filled, as SQLite requires for short reads).
    pub fn read(&self, buf: &mut [u8], offset: u64) -> usize {
        let start = offset.min(self.data.len() as u64) as usize;
        let n = (self.data.len() - start).min(buf.len());
        buf[..n].copy_from_slice(&self.data[start..start + n]);
        buf[n..].fill(0);
        n
    }

    /// Writes `buf` at `offset`, growing the file (zero-filled) as needed.
    pub fn write(&mut self, buf: &[u8], offset: u64) -> Result<(), String> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|e| *e <= MAX_MEM_FILE)
            .ok_or_else(|| format!("write past {MAX_MEM_FILE} bytes of an in-memory file"))?;
        if end as usize > self.data.len() {
            self.data.resize(end as usize, 0);
        }
        self.data[offset as usize..end as usize].copy_from_slice(buf);
        Ok(())
    }

    /// Truncates (or extends with zeros) to `size`.
    pub fn truncate(&mut self, size: u64) -> Result<(), String> {
        if size > MAX_MEM_FILE {
            return Err(format!(
                "size past {MAX_MEM_FILE} bytes of an in-memory file"
            ));
        }
        self.data.resize(size as usize, 0);
        // Give memory back after a journal is reset (journal_mode=TRUNCATE).
        if size == 0 {
            self.data.shrink_to_fit();
        }
        Ok(())
    }

    /// Current size.
    pub fn size(&self) -> u64 {
        self.data.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_truncate() {
        let mut f = MemFile::default();
        assert_eq!(f.write(b"abc", 5), Ok(()));
        assert_eq!(f.size(), 8);
        let mut b = [9u8; 10];
        assert_eq!(f.read(&mut b, 4), 4);
        assert_eq!(b, [0, b'a', b'b', b'c', 0, 0, 0, 0, 0, 0]);
        assert_eq!(f.read(&mut b, 100), 0);
        assert_eq!(f.truncate(6), Ok(()));
        assert_eq!(f.size(), 6);
        assert!(f.write(b"x", u64::MAX).is_err());
        assert!(f.truncate(u64::MAX).is_err());
    }
}

//! `Chunked`: the slots of a parking table, grown a fixed chunk at a time.
//!
//! A table holds one slot per parked connection, thousands of them. A `Vec` grown by
//! doubling keeps up to as many empty slots again as it has entries, and each growth
//! copies every entry into a new buffer, leaving the old one in the allocator's free
//! lists: together about 40 bytes per parked connection beside its 72-byte entry.
//! Chunks of `CHUNK` slots never move and leave at most one chunk partly empty.

/// Slots per chunk: 256 entries of 72 bytes, 18 KiB.
const CHUNK: usize = 256;

pub(super) struct Chunked<T> {
    chunks: Vec<Box<[Option<T>]>>,
    /// Slots handed out so far (the next `push` takes slot `len`).
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked {
            chunks: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Chunked<T> {
    /// Slots handed out so far, vacant or not.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Puts `value` in a new slot, at index `len()`.
    pub(super) fn push(&mut self, value: T) {
        if self.len == self.chunks.len() * CHUNK {
            self.chunks.push((0..CHUNK).map(|_| None).collect());
        }
        let (chunk, offset) = (self.len / CHUNK, self.len % CHUNK);
        self.chunks[chunk][offset] = Some(value);
        self.len += 1;
    }

    /// The slot at `index`, if it was handed out.
    pub(super) fn get_mut(&mut self, index: usize) -> Option<&mut Option<T>> {
        if index >= self.len {
            return None;
        }
        self.chunks.get_mut(index / CHUNK)?.get_mut(index % CHUNK)
    }

    /// Every slot handed out, in index order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Option<T>> {
        self.chunks
            .iter()
            .flat_map(|chunk| chunk.iter())
            .take(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_keep_their_index_across_chunks() {
        let mut slots = Chunked::default();
        for value in 0..(CHUNK * 2 + 3) {
            slots.push(value);
        }
        assert_eq!(slots.len(), CHUNK * 2 + 3);
        assert_eq!(
            slots.get_mut(CHUNK + 1).and_then(|slot| slot.take()),
            Some(CHUNK + 1)
        );
        assert_eq!(
            slots.get_mut(CHUNK + 1).map(|slot| slot.is_none()),
            Some(true)
        );
        assert!(slots.get_mut(CHUNK * 2 + 3).is_none());
        let seen: Vec<usize> = slots.iter().flatten().copied().collect();
        assert_eq!(seen.len(), CHUNK * 2 + 2);
        assert_eq!(seen.last(), Some(&(CHUNK * 2 + 2)));
        assert!(!seen.contains(&(CHUNK + 1)));
    }
}

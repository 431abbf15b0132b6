//! Sequential O_DIRECT writer of the active segment's `.log` file.
//!
//! Appended batches are copied once, from the caller's buffer into an aligned DMA buffer (the
//! "fill" buffer), with streaming stores where the CPU has them (`stream_copy.rs`). A write round takes the fill buffer whole, pads it to the page size with
//! zeros and writes it at its page-aligned file position; meanwhile a fresh fill buffer starts
//! with a copy of the partial last page, so the next round rewrites that page with more data
//! after it. Every append copied before a round starts goes into that round's one write (and
//! one fdatasync if the policy asks): this is the group commit. The bytes of the round in
//! flight stay readable from memory until the write completes; after that the round's buffer
//! joins the shard's batch cache (`batch_cache.rs`) and its bytes stay readable from memory
//! while the cache keeps it.
//!
//! This type only moves bytes; the log decides when rounds run (see `log.rs`).

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::{Rc, Weak};

use bytes::Bytes;
use glommio::io::{BufferedFile, DmaBuffer, DmaFile};

use super::batch_cache::CachedBytes;
use super::log_reader::ReadChunk;

use super::disk_budget::{self, PreallocationStep};
use super::log_config::LogConfig;
use super::stream_copy::StreamCopy;

/// Smallest fill buffer, bytes.
const MIN_BUFFER_BYTES: usize = 64 * 1024;

/// O_DIRECT alignment used for positions and lengths (the page size; also a multiple of
/// every logical block size Linux supports).
pub const PAGE_BYTES: u64 = 4096;

pub(crate) fn align_down(v: u64) -> u64 {
    v & !(PAGE_BYTES - 1)
}
pub(crate) fn align_up(v: u64) -> u64 {
    (v + PAGE_BYTES - 1) & !(PAGE_BYTES - 1)
}

/// Size of a fill buffer for `want` bytes: the next power of two, at least
/// [`MIN_BUFFER_BYTES`] and at most `max_bytes` (`write_buffer_bytes`). The shard's registered
/// I/O memory hands out power-of-two blocks, so a buffer of another size would hold the rest
/// of its block unused.
fn buffer_capacity(want: usize, max_bytes: usize) -> usize {
    want.next_power_of_two()
        .clamp(MIN_BUFFER_BYTES, max_bytes.max(MIN_BUFFER_BYTES))
}

/// Where [`SegmentAppender::walk_memory`] finds a piece of the segment.
enum MemoryPiece<'a> {
    /// Bytes of the fill buffer (not yet taken by a round).
    Fill(&'a [u8]),
    /// Bytes `from..to` of a written or in flight round's buffer.
    Round(&'a Rc<DmaBuffer>, usize, usize),
}

/// What the next fill buffer is sized for after a round of `round_bytes`: that much again with a
/// quarter more, for a load that grows a little (one that grows more moves the buffer to a
/// larger one, [`SegmentAppender::grow`]). The buffer joins the batch cache once written, which
/// counts its whole allocation: room left unused there is cache memory holding no data. With
/// twice the round, as before, a steady load left 27-33% of the cache's bytes holding data.
fn next_buffer_want(round_bytes: usize) -> usize {
    round_bytes + round_bytes / 4
}

/// One write round: the buffer to write at `start` (page aligned), and the logical end of the
/// segment once it is written.
pub(crate) struct WriteJob {
    pub file: Rc<DmaFile>,
    pub buffer: Rc<DmaBuffer>,
    pub start: u64,
    pub end: u64,
}

struct InFlight {
    buffer: Rc<DmaBuffer>,
    start: u64,
    len: usize,
    /// Size of the buffer's allocation (what the batch cache counts it as).
    allocation_bytes: usize,
}

/// A written round whose buffer the batch cache may still hold: `len` bytes of the file from
/// `start`.
struct Recent {
    buffer: Weak<DmaBuffer>,
    start: u64,
    len: usize,
}

impl Recent {
    fn end(&self) -> u64 {
        self.start + self.len as u64
    }
}

/// The writer of one active segment. It holds the segment's only O_DIRECT handle: a sealed
/// segment keeps just its buffered read handle.
pub(crate) struct SegmentAppender {
    file: Rc<DmaFile>,
    path: PathBuf,
    /// Largest fill buffer (`write_buffer_bytes`).
    max_buffer_bytes: usize,
    /// Size of the current fill buffer: it starts small and follows the load (the last
    /// round's size with a quarter more, [`next_buffer_want`], or what one append needs), so
    /// an idle partition holds little memory.
    fill_capacity: usize,
    fill: DmaBuffer,
    /// Page-aligned file position of `fill[0]`.
    fill_start: u64,
    fill_len: usize,
    in_flight: Option<InFlight>,
    /// Written rounds, oldest first and contiguous up to the written end; the live ones
    /// nearest the written end are read, and the rest are pruned as rounds finish.
    recent: VecDeque<Recent>,
    written_end: u64,
    preallocated_end: u64,
    preallocate_bytes: u64,
    /// Size of the next preallocation: starts small and doubles as the appends use it up.
    preallocation_step: PreallocationStep,
    /// Preallocated bytes past the written end that this appender counts in its shard's
    /// budget ([`disk_budget::reserve`]); given back as writes cover them and on drop.
    counted_preallocation_bytes: u64,
    /// Preallocation never goes past this (the segment size limit, page aligned), unless one
    /// write itself does.
    preallocate_limit: u64,
    /// `preallocate_zeroes`: the preallocated blocks are written with zeros between write
    /// rounds ([`SegmentAppender::next_zero_chunk`]).
    zero_fill: bool,
    /// The file's blocks below this are written (data or zeros) and inside its size: an
    /// append below it overwrites.
    zeroed_end: u64,
    /// The appends passed the preallocated end before the zeros reached it (or writing them
    /// failed): no more zeros in this segment.
    zero_fill_stopped: bool,
}

impl SegmentAppender {
    /// The segment's O_DIRECT handle (appends, truncation at the seal, fdatasync).
    pub fn file(&self) -> &Rc<DmaFile> {
        &self.file
    }

    /// Continues the segment whose intact data ends at `logical_end`; reads the partial last
    /// page back so the first round rewrites it.
    pub(crate) async fn open(
        file: Rc<DmaFile>,
        scan: &BufferedFile,
        path: &Path,
        logical_end: u64,
        config: &LogConfig,
    ) -> io::Result<SegmentAppender> {
        let buffer_bytes = config.write_buffer_bytes as usize;
        let preallocate_bytes = config.preallocate_bytes;
        let fill_start = align_down(logical_end);
        let fill_len = (logical_end - fill_start) as usize;
        let fill_capacity = MIN_BUFFER_BYTES.min(buffer_bytes);
        let mut fill = file.alloc_dma_buffer(fill_capacity);
        if fill_len > 0 {
            let page = scan.read_at(fill_start, fill_len).await?;
            if page.len() < fill_len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}: last page at byte {fill_start} is shorter than the log",
                        path.display()
                    ),
                ));
            }
            fill.as_bytes_mut()[..fill_len].copy_from_slice(&page[..fill_len]);
        }
        let preallocated_end = file.file_size().await?;
        let mut appender = SegmentAppender {
            file,
            path: path.to_path_buf(),
            max_buffer_bytes: buffer_bytes,
            fill_capacity,
            fill,
            fill_start,
            fill_len,
            in_flight: None,
            recent: VecDeque::new(),
            written_end: logical_end,
            preallocated_end,
            preallocate_bytes,
            preallocation_step: PreallocationStep::new(preallocate_bytes),
            counted_preallocation_bytes: 0,
            preallocate_limit: align_up(config.segment_bytes),
            zero_fill: config.preallocate_zeroes,
            zeroed_end: preallocated_end,
            zero_fill_stopped: false,
        };
        appender.recount_preallocation();
        Ok(appender)
    }

    /// Logical end: everything appended, written or not.
    pub(crate) fn end(&self) -> u64 {
        self.fill_start + self.fill_len as u64
    }

    /// Everything below this position is in the file.
    pub(crate) fn written_end(&self) -> u64 {
        self.written_end
    }

    /// Room left in the fill buffer.
    pub(crate) fn free_bytes(&self) -> usize {
        self.fill_capacity - self.fill_len
    }

    /// Makes room for `extra` more bytes by moving the fill buffer to a larger one, if the
    /// maximum allows; `false` if it is already at its maximum (a write round must free it).
    pub(crate) fn grow(&mut self, extra: usize) -> bool {
        let need = align_up((self.fill_len + extra) as u64) as usize;
        if need > self.max_buffer_bytes || self.fill_capacity >= self.max_buffer_bytes {
            return false;
        }
        let capacity = buffer_capacity((self.fill_capacity * 2).max(need), self.max_buffer_bytes);
        let mut bigger = self.file.alloc_dma_buffer(capacity);
        bigger.as_bytes_mut()[..self.fill_len]
            .copy_from_slice(&self.fill.as_bytes()[..self.fill_len]);
        self.fill = bigger;
        self.fill_capacity = capacity;
        true
    }

    /// Changes the largest fill buffer (a new `write_buffer_bytes`); applies from the next
    /// buffer on.
    pub(crate) fn set_max_buffer_bytes(&mut self, bytes: usize) {
        self.max_buffer_bytes = bytes.max(2 * PAGE_BYTES as usize);
    }

    /// Copies `bytes` after the current end and returns them in the buffer, for in-place
    /// rewrites. The caller checked [`SegmentAppender::free_bytes`].
    pub(crate) fn push(&mut self, bytes: &[u8]) -> &mut [u8] {
        let at = self.fill_len;
        debug_assert!(at + bytes.len() <= self.fill_capacity);
        let dst = &mut self.fill.as_bytes_mut()[at..at + bytes.len()];
        let mut copy = StreamCopy::new();
        copy.copy(dst, bytes);
        copy.finish();
        self.fill_len += bytes.len();
        dst
    }

    /// Copies `bytes` to the end of the fill buffer like [`Self::push`] (the caller made room)
    /// and returns the CRC-32C of `bytes[crc_from..]`, computed piece by piece: the checksum
    /// brings a piece into the L1 cache and the copy streams it from there to the buffer, so
    /// the source is read from memory once, not once for validation and again for the copy.
    pub(crate) fn push_with_crc(&mut self, bytes: &[u8], crc_from: usize) -> u32 {
        /// Piece of a copy checksummed while cached (the core's L1 data cache is 48 KiB).
        const PIECE_BYTES: usize = 32 * 1024;
        let at = self.fill_len;
        debug_assert!(at + bytes.len() <= self.fill_capacity && crc_from <= bytes.len());
        let dst = &mut self.fill.as_bytes_mut()[at..at + bytes.len()];
        let mut copy = StreamCopy::new();
        copy.copy(&mut dst[..crc_from], &bytes[..crc_from]);
        let mut crc = 0;
        let mut from = crc_from;
        while from < bytes.len() {
            let to = (from + PIECE_BYTES).min(bytes.len());
            crc = crc32c::crc32c_append(crc, &bytes[from..to]);
            copy.copy(&mut dst[from..to], &bytes[from..to]);
            from = to;
        }
        copy.finish();
        self.fill_len += bytes.len();
        crc
    }

    /// Bytes `at..at + len` of the fill buffer, pushed earlier and not yet taken by a round.
    pub(crate) fn pushed_mut(&mut self, at: usize, len: usize) -> &mut [u8] {
        debug_assert!(at + len <= self.fill_len);
        &mut self.fill.as_bytes_mut()[at..at + len]
    }

    /// Length of the fill buffer's content, to go back to with [`Self::unpush_to`].
    pub(crate) fn fill_len(&self) -> usize {
        self.fill_len
    }

    /// Drops what was pushed after the fill buffer held `fill_len` bytes (a record set whose
    /// CRC-32C did not match); no round may have started since.
    pub(crate) fn unpush_to(&mut self, fill_len: usize) {
        debug_assert!(fill_len <= self.fill_len);
        self.fill_len = fill_len;
    }

    /// Starts a write round with everything appended so far, or `None` if nothing is new.
    /// Only one round may be in flight.
    pub(crate) fn start_write(&mut self) -> Option<WriteJob> {
        debug_assert!(self.in_flight.is_none());
        let end = self.end();
        if end == self.written_end {
            return None;
        }
        let tail_start = align_down(end);
        let tail_len = (end - tail_start) as usize;
        let next_capacity = buffer_capacity(next_buffer_want(self.fill_len), self.max_buffer_bytes);
        let mut next = self.file.alloc_dma_buffer(next_capacity);
        let allocation_bytes = self.fill_capacity;
        let tail_from = (tail_start - self.fill_start) as usize;
        next.as_bytes_mut()[..tail_len]
            .copy_from_slice(&self.fill.as_bytes()[tail_from..tail_from + tail_len]);
        let mut buffer = std::mem::replace(&mut self.fill, next);
        let len = self.fill_len;
        let write_len = align_up(len as u64) as usize;
        // Zero padding past the logical end: recovery reads zeros there as "no more batches".
        buffer.as_bytes_mut()[len..write_len].fill(0);
        buffer.trim_to_size(write_len);
        let buffer = Rc::new(buffer);
        let start = self.fill_start;
        self.in_flight = Some(InFlight {
            buffer: buffer.clone(),
            start,
            len,
            allocation_bytes,
        });
        self.fill_start = tail_start;
        self.fill_len = tail_len;
        self.fill_capacity = next_capacity;
        Some(WriteJob {
            file: self.file.clone(),
            buffer,
            start,
            end,
        })
    }

    /// How far the file must be preallocated before `job` is written, if further than now:
    /// the write's end plus the next step (which doubles each time one is granted, up to
    /// `preallocate_bytes`), capped at the segment size and at what the shard's budget still
    /// allows ([`disk_budget::allowance`]). `None` when nothing may be preallocated: the write
    /// then allocates its own blocks.
    pub(crate) fn preallocation_for(&mut self, job: &WriteJob) -> Option<u64> {
        if self.preallocate_bytes == 0 {
            return None;
        }
        let write_end = job.start + job.buffer.len() as u64;
        if write_end <= self.preallocated_end {
            return None;
        }
        if self.zero_fill && self.zeroed_end < align_down(self.preallocated_end) {
            // The appends came faster than the idle moments between rounds let the zeros be
            // written: the rest of the segment goes without them.
            self.zero_fill_stopped = true;
        }
        let free_bytes = match disk_budget::fs_space(&self.path) {
            Ok(space) => space.free_bytes,
            Err(e) => {
                tracing::warn!(file = %self.path.display(), error = %e, "statvfs failed");
                0
            }
        };
        let step = disk_budget::allowance(self.preallocation_step.next_bytes(), free_bytes);
        let want = (align_up(write_end) + step).min(self.preallocate_limit);
        if want <= write_end {
            return None;
        }
        self.preallocation_step.advance();
        Some(want)
    }

    pub(crate) fn set_preallocated(&mut self, end: u64) {
        self.preallocated_end = self.preallocated_end.max(end);
        self.recount_preallocation();
    }

    /// Whether preallocated blocks past the data wait for their zeros.
    pub(crate) fn zero_fill_wanted(&self) -> bool {
        self.zero_fill
            && !self.zero_fill_stopped
            && self.zeroed_end.max(align_up(self.end())) < align_down(self.preallocated_end)
    }

    /// Where the next zeros go and how many (at most `chunk_bytes`, page multiples): from the
    /// data's page-aligned end (what waits in the fill buffer included: the next round writes
    /// it from its page) or the zeros' end, whichever is further, up to the preallocated end.
    /// `None` when everything preallocated is written. Called with no write round in flight.
    pub(crate) fn next_zero_chunk(&self, chunk_bytes: u64) -> Option<(u64, u64)> {
        debug_assert!(self.in_flight.is_none());
        if !self.zero_fill || self.zero_fill_stopped {
            return None;
        }
        let start = self.zeroed_end.max(align_up(self.end()));
        let len = align_down(self.preallocated_end.saturating_sub(start)).min(chunk_bytes);
        (len > 0).then_some((start, len))
    }

    /// Zeros were written up to `end` ([`SegmentAppender::next_zero_chunk`]). Appends copied
    /// meanwhile may reach into them: the round that writes those waited for the writer's turn,
    /// so it overwrites the zeros after they landed.
    pub(crate) fn zeroes_written(&mut self, end: u64) {
        self.zeroed_end = self.zeroed_end.max(end);
    }

    /// Writing zeros failed: the segment goes on without them.
    pub(crate) fn stop_zero_fill(&mut self) {
        self.zero_fill_stopped = true;
    }

    /// Brings this appender's share of the shard's preallocation count up to date.
    fn recount_preallocation(&mut self) {
        let now = self
            .preallocated_end
            .saturating_sub(align_up(self.written_end));
        let before = self.counted_preallocation_bytes;
        if now > before {
            disk_budget::reserve(now - before);
        } else {
            disk_budget::release(before - now);
        }
        self.counted_preallocation_bytes = now;
    }

    /// Marks the round done: its bytes are in the file, and its buffer is offered to the
    /// batch cache.
    pub(crate) fn finish_write(&mut self, job: &WriteJob) {
        self.written_end = job.end;
        if let Some(done) = self.in_flight.take() {
            debug_assert_eq!(done.start + done.len as u64, job.end);
            // Only the live rounds nearest the written end are read (`memory_start`): a round
            // before a dropped one is of no use, even if an answer still holds its buffer.
            if let Some(dropped) = self
                .recent
                .iter()
                .rposition(|r| r.buffer.strong_count() == 0)
            {
                self.recent.drain(..=dropped);
            }
            match super::batch_cache::keep(done.buffer, done.allocation_bytes as u64) {
                Some(buffer) => self.recent.push_back(Recent {
                    buffer,
                    start: done.start,
                    len: done.len,
                }),
                // A round too large for the cache: the older ones no longer reach the
                // written end, so they are not read either.
                None => self.recent.clear(),
            }
        }
        self.recount_preallocation();
    }

    /// Everything from this position up is readable from memory: the rounds the batch cache
    /// still holds (contiguous, newest back), the round in flight and the fill buffer.
    pub(crate) fn memory_start(&self) -> u64 {
        // The rounds are contiguous up to the written end (each starts at or below the end of
        // the one before, and a round the cache did not keep clears the list), so the live
        // ones from the newest back reach down to the answer. The cache drops rounds oldest
        // first, but an answer being sent may still hold an older round's buffer after a newer
        // one went: the walk stops at the first dropped round.
        self.recent
            .iter()
            .rev()
            .take_while(|r| r.buffer.strong_count() > 0)
            .fold(self.written_end, |start, r| start.min(r.start))
    }

    /// Forgets the failed round (the log refuses appends after a failed write).
    pub(crate) fn abandon_write(&mut self) {
        self.in_flight = None;
    }

    /// Copies up to `max` bytes from memory starting at `pos` (at or above
    /// [`SegmentAppender::memory_start`]).
    pub(crate) fn copy_from_memory(&self, pos: u64, max: usize, out: &mut Vec<u8>) {
        self.walk_memory(pos, max, |piece| match piece {
            MemoryPiece::Fill(bytes) => out.extend_from_slice(bytes),
            MemoryPiece::Round(buffer, from, to) => {
                out.extend_from_slice(&buffer.as_bytes()[from..to]);
            }
        });
    }

    /// Up to `max` bytes from memory starting at `pos` (at or above
    /// [`SegmentAppender::memory_start`]), appended to `out` in order: the written rounds and
    /// the one in flight as slices of their buffers (no copy), the fill buffer's bytes as a
    /// copy (appends keep changing it).
    pub(crate) fn read_from_memory(&self, pos: u64, max: usize, out: &mut Vec<ReadChunk>) {
        self.walk_memory(pos, max, |piece| match piece {
            MemoryPiece::Fill(bytes) => out.push(ReadChunk::Memory(Bytes::copy_from_slice(bytes))),
            MemoryPiece::Round(buffer, from, to) => {
                out.push(ReadChunk::Cached(CachedBytes::new(
                    buffer.clone(),
                    from,
                    to - from,
                )));
            }
        });
    }

    /// Hands the memory holding up to `max` bytes from `pos` to `each`, piece by piece in
    /// file order.
    fn walk_memory(&self, pos: u64, max: usize, mut each: impl FnMut(MemoryPiece<'_>)) {
        let end = self.end();
        let mut pos = pos;
        let stop = end.min(pos + max as u64);
        while pos < stop {
            if pos >= self.fill_start {
                let from = (pos - self.fill_start) as usize;
                let to = (stop - self.fill_start) as usize;
                each(MemoryPiece::Fill(&self.fill.as_bytes()[from..to]));
                pos = stop;
            } else if let Some(f) = self.in_flight.as_ref().filter(|f| pos >= f.start) {
                let from = (pos - f.start) as usize;
                let to = ((stop.min(self.fill_start) - f.start) as usize).min(f.len);
                each(MemoryPiece::Round(&f.buffer, from, to));
                pos = f.start + to as u64;
            } else if let Some((round, buffer)) = self.recent_round(pos) {
                let from = (pos - round.start) as usize;
                let to = (stop.min(round.end()) - round.start) as usize;
                each(MemoryPiece::Round(&buffer, from, to));
                pos = round.start + to as u64;
            } else {
                debug_assert!(false, "position {pos} is not in memory");
                return;
            }
        }
    }

    /// The newest written round still in the batch cache that holds the byte at `pos`.
    fn recent_round(&self, pos: u64) -> Option<(&Recent, Rc<DmaBuffer>)> {
        self.recent
            .iter()
            .rev()
            .filter(|r| r.start <= pos && pos < r.end())
            .find_map(|r| r.buffer.upgrade().map(|b| (r, b)))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SegmentAppender {
    /// A sealed or closed segment's file is truncated to its size, which frees the blocks
    /// preallocated past it: they leave the shard's count.
    fn drop(&mut self) {
        disk_budget::release(self.counted_preallocation_bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use glommio::io::{BufferedFile, OpenOptions};

    use super::SegmentAppender;
    use crate::storage::disk_budget::INITIAL_PREALLOCATE_BYTES;
    use crate::storage::fault_injection::tests::config;

    /// One write round of `bytes` more (the bookkeeping only: nothing is written), with the
    /// preallocation it asks for granted; returns the new preallocated end, if any.
    fn round(a: &mut SegmentAppender, bytes: usize) -> Option<u64> {
        if a.free_bytes() < bytes {
            assert!(a.grow(bytes));
        }
        a.push(&vec![7u8; bytes]);
        let job = a.start_write().unwrap();
        let to = a.preallocation_for(&job);
        if let Some(to) = to {
            a.set_preallocated(to);
        }
        a.finish_write(&job);
        to
    }

    #[test]
    fn zeros_follow_the_preallocation_and_stop_once_the_appends_pass_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.log");
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let dma = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .dma_open(&path)
                    .await
                    .unwrap();
                let scan = BufferedFile::open(&path).await.unwrap();
                let mut config = config();
                config.preallocate_zeroes = true;
                config.segment_bytes = 64 << 20;
                let mut a = SegmentAppender::open(Rc::new(dma), &scan, &path, 0, &config)
                    .await
                    .unwrap();
                const CHUNK: u64 = 128 * 1024;
                // Nothing is reserved yet, so no zeros are wanted.
                assert!(!a.zero_fill_wanted());
                assert_eq!(a.next_zero_chunk(CHUNK), None);

                // The first round reserves the first step: zeros go from the data's page to it.
                let first = round(&mut a, 1000).unwrap();
                assert_eq!(first, 4096 + INITIAL_PREALLOCATE_BYTES);
                assert!(a.zero_fill_wanted());
                assert_eq!(a.next_zero_chunk(CHUNK), Some((4096, CHUNK)));
                a.zeroes_written(4096 + CHUNK);
                assert_eq!(a.next_zero_chunk(CHUNK), Some((4096 + CHUNK, CHUNK)));
                a.zeroes_written(first);
                assert!(!a.zero_fill_wanted());
                assert_eq!(a.next_zero_chunk(CHUNK), None);

                // Appends past a step the zeros had filled: the next step gets zeros too,
                // from the data's page on.
                let second = round(&mut a, 300_000).unwrap();
                assert!(second > first);
                let data_page = 303_104; // 301000 bytes, page aligned up
                assert!(a.zero_fill_wanted());
                assert_eq!(a.next_zero_chunk(CHUNK), Some((data_page, CHUNK)));
                // Data waiting in the fill buffer moves the start past its page.
                a.push(&[7u8; 5000]);
                assert_eq!(a.next_zero_chunk(CHUNK), Some((data_page + 4096, CHUNK)));
                a.unpush_to(a.fill_len() - 5000);

                // Appends past a step before its zeros were written: none for the rest of the
                // segment, whatever it reserves next.
                let third = round(&mut a, 600_000).unwrap();
                assert!(third > second);
                assert!(!a.zero_fill_wanted());
                assert_eq!(a.next_zero_chunk(CHUNK), None);
                round(&mut a, 1_000_000);
                assert!(!a.zero_fill_wanted());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}

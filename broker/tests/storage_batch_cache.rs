//! The shard's batch cache: reads of what was just written come from memory (the written
//! rounds' buffers) and give the same bytes as the segment file; the cache stays inside its
//! limit, dropping the oldest rounds (read from the file again); a large cached read (a
//! reader catching up) is answered from the round buffers themselves, not copied; a log cut back and written again never
//! serves the bytes it had before the cut.
mod support;

use broker::storage::batch_cache;
use broker::storage::log_reader::{LogReadResult, ReadChunk};
use broker::storage::PartitionLog;
use kafka_protocol::records::Compression;

fn batch(i: usize) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..4).map(|r| vec![(i * 7 + r) as u8; 3000]).collect();
    support::encode_batch(&values, 1_700_000_000_000 + i as i64, Compression::None)
}

/// Bytes of a read by where they come from: memory (copied or not), the file.
fn memory_and_file_bytes(read: &LogReadResult) -> (u64, u64) {
    let (copied, cached, file) = by_source(read);
    (copied + cached, file)
}

/// Bytes of a read: copied out of the fill buffer, shared with the cache's buffers, the file.
fn by_source(read: &LogReadResult) -> (u64, u64, u64) {
    let (mut copied, mut cached, mut file) = (0, 0, 0);
    for chunk in &read.chunks {
        match chunk {
            ReadChunk::Memory(bytes) => copied += bytes.len() as u64,
            ReadChunk::Cached(bytes) => cached += bytes.len() as u64,
            ReadChunk::File(range) => file += range.len as u64,
        }
    }
    (copied, cached, file)
}

fn segment_file(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join(format!("{:020}.log", 0))).unwrap()
}

fn config() -> broker::storage::log_config::LogConfig {
    let mut config = support::small_config();
    config.segment_bytes = 64 << 20;
    config
}

#[test]
fn just_written_batches_are_read_from_memory_with_the_files_bytes() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        batch_cache::set_limit(16 << 20);
        let log = PartitionLog::open(&path, config()).await.unwrap();
        for i in 0..40 {
            // Flush `always`: each append returns after its round was written and synced, so
            // every byte below is in the file as well.
            log.append(&batch(i), 0).await.unwrap();
        }
        let read = log.read(0, 64 << 20, None).await.unwrap();
        let (memory, file) = memory_and_file_bytes(&read);
        assert_eq!(file, 0, "every written round is still cached");
        assert!(memory > 40 * 12_000, "{memory}");
        let bytes = read.to_vec().unwrap();
        assert_eq!(bytes, segment_file(&path)[..bytes.len()]);
        assert_eq!(support::decode_batches(&bytes).len(), 40);

        // From the middle: the header scan and the data both come from memory.
        let middle = log.read(77, 64 << 20, None).await.unwrap();
        assert_eq!(memory_and_file_bytes(&middle).1, 0);
        assert!(middle.first_batch_offset.unwrap() <= 77);
        let tail = middle.to_vec().unwrap();
        assert_eq!(bytes[bytes.len() - tail.len()..], tail[..]);

        // Without the cache (and with no answer holding its buffers) the same read is a file
        // range with the same bytes.
        drop((read, middle));
        batch_cache::set_limit(0);
        assert_eq!(batch_cache::held_bytes(), 0);
        let uncached = log.read(0, 64 << 20, None).await.unwrap();
        assert_eq!(memory_and_file_bytes(&uncached), (0, bytes.len() as u64));
        assert_eq!(uncached.to_vec().unwrap(), bytes);
        log.close().await.unwrap();
    });
}

#[test]
fn the_cache_keeps_to_its_limit_and_older_rounds_are_read_from_the_file() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        let limit = 512 << 10;
        batch_cache::set_limit(limit);
        let log = PartitionLog::open(&path, config()).await.unwrap();
        for i in 0..300 {
            log.append(&batch(i), 0).await.unwrap();
            assert!(batch_cache::held_bytes() <= limit);
        }
        let read = log.read(0, 64 << 20, None).await.unwrap();
        let (memory, file) = memory_and_file_bytes(&read);
        assert!(file > 0, "the oldest rounds left the cache");
        assert!(memory > 0, "the newest rounds are still in it");
        // File ranges first, then memory: the cached rounds are the newest.
        assert!(matches!(read.chunks.first(), Some(ReadChunk::File(_))));
        assert!(matches!(
            read.chunks.last(),
            Some(ReadChunk::Memory(_) | ReadChunk::Cached(_))
        ));
        let bytes = read.to_vec().unwrap();
        assert_eq!(bytes, segment_file(&path)[..bytes.len()]);
        let batches = support::decode_batches(&bytes);
        assert_eq!(batches.len(), 300);
        for (i, (base, values)) in batches.iter().enumerate() {
            assert_eq!(*base, 4 * i as i64);
            assert_eq!(values[0][0], (i * 7) as u8);
        }
        log.close().await.unwrap();
        batch_cache::set_limit(0);
    });
}

#[test]
fn a_large_cached_range_is_answered_from_the_round_buffers_without_a_copy() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        batch_cache::set_limit(16 << 20);
        let log = PartitionLog::open(&path, config()).await.unwrap();
        for i in 0..200 {
            log.append(&batch(i), 0).await.unwrap();
        }
        // About 2.4 MB, all cached (a reader catching up): slices of the rounds' buffers,
        // with at most the partial last page (which the fill buffer holds too) copied.
        let catching_up = log.read(0, 64 << 20, None).await.unwrap();
        let (copied, cached, file) = by_source(&catching_up);
        assert_eq!(file, 0);
        assert!(copied < 4096, "{copied}");
        assert!(cached > 2_000_000, "{cached}");
        let bytes = catching_up.to_vec().unwrap();
        assert_eq!(bytes, segment_file(&path)[..bytes.len()]);
        assert_eq!(support::decode_batches(&bytes).len(), 200);
        // A tailing read of the last few batches comes from the cache, same bytes.
        let tailing = log.read(4 * 190, 64 << 20, None).await.unwrap();
        assert_eq!(memory_and_file_bytes(&tailing).1, 0);
        let tail = tailing.to_vec().unwrap();
        assert_eq!(bytes[bytes.len() - tail.len()..], tail[..]);
        // The slices stay readable after the cache lets their buffers go.
        drop((catching_up, tailing));
        let head = log.read(0, 100_000, None).await.unwrap();
        let head_bytes = head.to_vec().unwrap();
        batch_cache::set_limit(0);
        assert_eq!(head.to_vec().unwrap(), head_bytes);
        // Only the oldest rounds are still alive (`head` holds them): a read of the whole log
        // must not take them for cached data in front of the dropped ones.
        let whole = log.read(0, 64 << 20, None).await.unwrap();
        assert_eq!(memory_and_file_bytes(&whole).0, 0);
        assert_eq!(whole.to_vec().unwrap(), bytes);
        log.close().await.unwrap();
    });
}

#[test]
fn a_log_cut_back_and_written_again_reads_the_new_bytes() {
    let dir = support::scratch_dir();
    let path = dir.path().to_path_buf();
    support::run(move || async move {
        batch_cache::set_limit(16 << 20);
        let log = PartitionLog::open(&path, config()).await.unwrap();
        for i in 0..20 {
            log.append(&batch(i), 0).await.unwrap();
        }
        // The rounds of the old log stay in the cache until pushed out; the reopened log
        // must not read them for the offsets it writes again.
        let (log, _cut) = log.truncated(40).await.unwrap();
        assert_eq!(log.log_end_offset(), 40);
        for i in 100..110 {
            log.append(&batch(i), 1).await.unwrap();
        }
        // The whole log as a consumer reads it (the cut may have started a new segment).
        let batches: Vec<_> = support::read_all(&log, 0, 64 << 20)
            .await
            .iter()
            .flat_map(|b| support::decode_batches(b))
            .collect();
        assert_eq!(batches.len(), 20);
        for (n, (base, values)) in batches.iter().enumerate() {
            assert_eq!(*base, 4 * n as i64);
            let i = if n < 10 { n } else { 100 + n - 10 };
            assert_eq!(values[0][0], (i * 7) as u8, "batch {n}");
        }
        let from_new = log.read(40, 64 << 20, None).await.unwrap();
        assert_eq!(
            memory_and_file_bytes(&from_new).1,
            0,
            "the new rounds are cached"
        );
        assert_eq!(
            support::decode_batches(&from_new.to_vec().unwrap())[0].0,
            40
        );
        log.close().await.unwrap();
        batch_cache::set_limit(0);
    });
}

//! Peer wire framing: a 4-byte big-endian length, then an rkyv archive of a [`Message`],
//! validated (bytecheck) before it is deserialized. A bad frame is an error for that
//! connection, never a panic. Connections open with a fixed handshake naming the dialer.

use std::io::{Read, Write};

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::message::Message;
use super::zxid::ServerId;

/// Handshake magic: protocol name and version.
pub const HANDSHAKE_MAGIC: &[u8; 8] = b"ZABPEER1";
/// Frames are read in pieces of at most this size.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Handshake length: magic + dialer myid + the myid it meant to reach.
pub const HANDSHAKE_BYTES: usize = 8 + 8 + 8;

/// A framing or decoding failure on one connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed or closed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// A length prefix beyond the limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The archive failed validation or deserialization.
    #[error("invalid message archive: {0}")]
    Invalid(String),
    /// The handshake was not ours.
    #[error("bad handshake: {0}")]
    Handshake(String),
}

/// Serializes a message into a complete frame (length prefix included).
pub fn encode_frame(msg: &Message) -> Result<Vec<u8>, FrameError> {
    let archive =
        rkyv::to_bytes::<rancor::Error>(msg).map_err(|e| FrameError::Invalid(e.to_string()))?;
    let len = u32::try_from(archive.len()).map_err(|_| FrameError::TooLarge {
        len: archive.len(),
        max: u32::MAX as usize,
    })?;
    let mut frame = Vec::with_capacity(4 + archive.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&archive);
    Ok(frame)
}

/// Serializes a message into its archive only, in a buffer of `capacity_hint` bytes; the
/// caller writes the 4-byte big-endian length first. For very large messages (SNAP): the
/// archive is not copied again into a frame buffer.
pub fn encode_archive(msg: &Message, capacity_hint: usize) -> Result<Vec<u8>, FrameError> {
    let archive = rkyv::api::high::to_bytes_in::<Vec<u8>, rancor::Error>(
        msg,
        Vec::with_capacity(capacity_hint),
    )
    .map_err(|e| FrameError::Invalid(e.to_string()))?;
    if u32::try_from(archive.len()).is_err() {
        return Err(FrameError::TooLarge {
            len: archive.len(),
            max: u32::MAX as usize,
        });
    }
    Ok(archive)
}

/// Validates and deserializes one archive.
pub fn decode_message(archive: &[u8]) -> Result<Message, FrameError> {
    // rkyv needs its input aligned; a received buffer is copied into an aligned one if not.
    if (archive.as_ptr() as usize) % 16 == 0 {
        return rkyv::from_bytes::<Message, rancor::Error>(archive)
            .map_err(|e| FrameError::Invalid(e.to_string()));
    }
    let mut aligned: AlignedVec<16> = AlignedVec::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::from_bytes::<Message, rancor::Error>(&aligned)
        .map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Reads one frame into `buf` (reused between calls) and decodes it.
pub fn read_frame(
    r: &mut impl Read,
    buf: &mut AlignedVec<16>,
    max_frame_bytes: usize,
) -> Result<Message, FrameError> {
    read_frame_with_progress(r, buf, max_frame_bytes, |_, _| {})
}

/// [`read_frame`], calling `progress(bytes received, frame bytes)` after each piece of the
/// frame arrived (a SNAP frame is as large as a whole snapshot).
pub fn read_frame_with_progress(
    r: &mut impl Read,
    buf: &mut AlignedVec<16>,
    max_frame_bytes: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<Message, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max_frame_bytes {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_bytes,
        });
    }
    // Grow the buffer with the bytes that actually arrive, so a peer announcing a huge
    // frame and sending nothing does not make us allocate it.
    buf.clear();
    while buf.len() < len {
        let start = buf.len();
        let chunk = (len - start).min(READ_CHUNK_BYTES);
        buf.resize(start + chunk, 0);
        r.read_exact(&mut buf.as_mut_slice()[start..])?;
        progress(buf.len(), len);
    }
    rkyv::from_bytes::<Message, rancor::Error>(buf).map_err(|e| FrameError::Invalid(e.to_string()))
}

/// Writes the dialer's handshake.
pub fn write_handshake(w: &mut impl Write, me: ServerId, target: ServerId) -> std::io::Result<()> {
    let mut b = [0u8; HANDSHAKE_BYTES];
    b[..8].copy_from_slice(HANDSHAKE_MAGIC);
    b[8..16].copy_from_slice(&me.to_be_bytes());
    b[16..24].copy_from_slice(&target.to_be_bytes());
    w.write_all(&b)
}

/// Reads a handshake; returns the dialer's myid after checking it meant to reach `me`.
pub fn read_handshake(r: &mut impl Read, me: ServerId) -> Result<ServerId, FrameError> {
    let mut b = [0u8; HANDSHAKE_BYTES];
    r.read_exact(&mut b)?;
    if &b[..8] != HANDSHAKE_MAGIC {
        return Err(FrameError::Handshake("not a ZAB peer (magic)".into()));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&b[8..16]);
    let mut target = [0u8; 8];
    target.copy_from_slice(&b[16..24]);
    let target = u64::from_be_bytes(target);
    if target != me {
        return Err(FrameError::Handshake(format!(
            "peer meant to reach server {target}, this is server {me}"
        )));
    }
    Ok(u64::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    //! Proves every message kind round-trips through a frame, and that truncated, oversized
    //! and garbage frames are errors rather than panics.
    use super::*;
    use crate::zab::message::{EpochRange, PeerState, SyncKind, Txn, Vote};

    fn samples() -> Vec<Message> {
        let vote = Vote {
            leader: 3,
            zxid: 0x1_0000_0005,
            epoch: 1,
        };
        vec![
            Message::Notification {
                vote,
                round: 9,
                state: PeerState::Looking,
            },
            Message::FollowerInfo {
                accepted_epoch: 2,
                accepted_leader: 3,
                last_zxid: 5,
            },
            Message::LeaderInfo { epoch: 4 },
            Message::AckEpoch {
                current_epoch: 3,
                last_zxid: 7,
                epoch_ranges: vec![EpochRange {
                    epoch: 3,
                    last_zxid: 7,
                }],
            },
            Message::Sync {
                kind: SyncKind::Diff,
            },
            Message::Sync {
                kind: SyncKind::Trunc { zxid: 6 },
            },
            Message::Sync {
                kind: SyncKind::Snap {
                    zxid: 6,
                    data: vec![1, 2, 3],
                },
            },
            Message::Proposal {
                txns: vec![
                    Txn {
                        zxid: 8,
                        payload: b"hello".to_vec(),
                    },
                    Txn {
                        zxid: 9,
                        payload: vec![],
                    },
                ],
            },
            Message::NewLeader {
                epoch: 4,
                last_zxid: 9,
            },
            Message::AckNewLeader { epoch: 4 },
            Message::UpToDate { commit_zxid: 9 },
            Message::Ack { zxid: 9 },
            Message::Commit { zxid: 9 },
            Message::Ping { commit_zxid: 9 },
            Message::PingAck,
            Message::Forward {
                origin: 2,
                request_id: 77,
                payload: b"req".to_vec(),
            },
        ]
    }

    #[test]
    fn frames_round_trip_and_reject_bad_input() {
        for m in samples() {
            let frame = encode_frame(&m).expect("encode");
            let mut buf = AlignedVec::new();
            let got = read_frame(&mut frame.as_slice(), &mut buf, 1 << 20).expect("decode");
            assert_eq!(got, m);
            // The archive alone, behind its length, is the same frame.
            let archive = encode_archive(&m, 0).expect("encode archive");
            assert_eq!(&frame[4..], archive.as_slice());
            assert_eq!(&frame[..4], (archive.len() as u32).to_be_bytes().as_slice());
            // Every truncation is an error.
            for cut in [0, 3, 4, frame.len() / 2, frame.len() - 1] {
                assert!(read_frame(&mut &frame[..cut], &mut buf, 1 << 20).is_err());
            }
        }
        // A frame larger than one read chunk (a big SNAP) arrives whole.
        let big_snap = Message::Sync {
            kind: SyncKind::Snap {
                zxid: 5,
                data: (0..3 * READ_CHUNK_BYTES + 17).map(|i| i as u8).collect(),
            },
        };
        let frame = encode_frame(&big_snap).expect("encode");
        let mut buf = AlignedVec::new();
        let got = read_frame(&mut frame.as_slice(), &mut buf, 64 << 20).expect("decode");
        assert_eq!(got, big_snap);
        // Oversized length prefix.
        let mut buf = AlignedVec::new();
        let big = [0xffu8, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_frame(&mut big.as_slice(), &mut buf, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        // Garbage bodies of many lengths never panic and never pass as a message with
        // out-of-range pointers.
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..200usize {
            let mut body = Vec::with_capacity(len);
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                body.push(seed as u8);
            }
            let _ = decode_message(&body);
        }
        // A valid archive with a flipped enum tag byte is rejected or decodes to a valid value.
        let frame = encode_frame(&Message::Commit { zxid: 1 }).expect("encode");
        for i in 4..frame.len() {
            let mut bad = frame.clone();
            bad[i] = 0xff;
            let _ = read_frame(&mut bad.as_slice(), &mut buf, 1 << 20);
        }
    }

    #[test]
    fn handshake_checks_magic_and_target() {
        let mut b = Vec::new();
        write_handshake(&mut b, 3, 1).expect("write");
        assert_eq!(read_handshake(&mut b.as_slice(), 1).expect("ok"), 3);
        assert!(read_handshake(&mut b.as_slice(), 2).is_err());
        b[0] = b'X';
        assert!(read_handshake(&mut b.as_slice(), 1).is_err());
    }
}

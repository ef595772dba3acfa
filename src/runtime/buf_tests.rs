//! Unit tests of [`RecvBuf`](super::RecvBuf): growth, views, chunk reuse and
//! ring segments read in place.

use super::*;

fn receive(buf: &mut RecvBuf, data: &[u8]) {
    let tail = buf.read_target();
    let (ptr, len) = tail.raw_parts();
    assert!(len >= data.len(), "reserve made room");
    // SAFETY: the tail is ours alone and has `len >= data.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr, data.len()) };
    buf.commit(tail, data.len());
}

fn room(buf: &mut RecvBuf) -> usize {
    buf.read_target().raw_parts().1
}

#[test]
fn a_huge_chunk_request_is_clamped_not_wrapped() {
    assert_eq!(Chunk::clamp(usize::MAX - 3), Chunk::MAX);
    assert_eq!(Chunk::clamp(1 << 63), Chunk::MAX);
    assert_eq!(Chunk::clamp(17), 32);
    let mut buf = RecvBuf::new(1 << 63);
    buf.reserve(32);
    assert!(room(&mut buf) <= Chunk::MAX);
}

#[test]
fn append_with_keeps_what_fill_reports_after_the_pending_bytes() {
    let mut buf = RecvBuf::new(64 << 10);
    buf.append(&[7u8; 20]);
    let kept = buf.append_with(100, |tail| {
        assert_eq!(tail.len(), 100, "one piece of the asked length");
        tail.fill(9);
        Ok::<_, ()>(30)
    });
    assert_eq!(kept, Ok(30));
    assert_eq!(buf.unconsumed().len(), 50);
    assert!(buf.unconsumed()[..20].iter().all(|b| *b == 7));
    assert!(buf.unconsumed()[20..].iter().all(|b| *b == 9));
    assert_eq!(
        buf.append_with(100, |tail| {
            tail.fill(1);
            Err::<usize, _>("bad record")
        }),
        Err("bad record")
    );
    assert_eq!(buf.unconsumed().len(), 50, "an error keeps nothing");
}

#[test]
fn a_large_frame_opened_record_by_record_moves_its_bytes_a_few_times() {
    let mut buf = RecvBuf::new(256 << 10);
    let frame = 4 << 20;
    buf.reserve(frame);
    let record = [3u8; 16 << 10];
    while buf.unconsumed().len() < frame {
        buf.append_with(record.len(), |tail| {
            tail.copy_from_slice(&record);
            Ok::<_, ()>(record.len())
        })
        .unwrap();
    }
    // Growth by doubling moves about the frame's size in all; growing by
    // one record at a time would move ~500 MiB.
    assert!(
        buf.moved <= 2 * frame,
        "moved {} bytes for a {frame}-byte frame",
        buf.moved
    );
    assert!(buf.unconsumed().iter().all(|b| *b == 3));
}

#[test]
fn a_released_buffer_starts_small_again() {
    let mut buf = RecvBuf::new(256 << 10);
    buf.append(&[1u8; 100 << 10]);
    buf.consume(100 << 10);
    buf.release_idle_and_shrink();
    assert_eq!(buf.class, SMALL_CHUNK);
    buf.append(&[2u8; 64]);
    assert_eq!(buf.class, SMALL_CHUNK, "64 bytes do not make it grow");
    assert_eq!(buf.unconsumed(), &[2u8; 64]);
}

#[test]
fn append_with_never_writes_under_a_held_view() {
    let mut buf = RecvBuf::new(16 << 10);
    buf.append(&[1u8; 48]);
    let view = buf.view(0, 48);
    buf.consume(48);
    for round in 0..40u8 {
        let len = 1000 + usize::from(round) * 97;
        buf.append_with(len, |tail| {
            tail.fill(round);
            Ok::<_, ()>(len - 1)
        })
        .unwrap();
        assert!(buf.unconsumed().iter().all(|b| *b == round));
        buf.consume(len - 1);
    }
    assert!(view.iter().all(|b| *b == 1), "held view unchanged");
}

#[test]
fn views_survive_further_reads_and_chunk_switches() {
    let mut buf = RecvBuf::new(4096);
    buf.reserve(32);
    receive(&mut buf, &[1u8; 48]);
    let view = buf.view(0, 48);
    buf.consume(48);
    for round in 0..10u8 {
        buf.reserve(4000);
        receive(&mut buf, &vec![round; 4000]);
        assert_eq!(buf.unconsumed().len(), 4000);
        buf.consume(4000);
    }
    assert!(view.iter().all(|b| *b == 1), "held view unchanged");
    assert_eq!(view.as_ptr() as usize % FRAME_ALIGN, 0);
}

#[test]
fn partial_frame_moves_to_aligned_front_of_new_chunk() {
    let mut buf = RecvBuf::new(4096);
    buf.reserve(32);
    receive(&mut buf, &[7u8; 4080]);
    let held = buf.view(0, 16);
    buf.consume(4064);
    buf.reserve(64);
    assert_eq!(buf.unconsumed(), &[7u8; 16]);
    assert_eq!(buf.unconsumed().as_ptr() as usize % FRAME_ALIGN, 0);
    receive(&mut buf, &[8u8; 48]);
    assert_eq!(buf.unconsumed().len(), 64);
    assert_eq!(&held[..], &[7u8; 16]);
}

#[test]
fn large_frames_grow_the_buffer_as_their_bytes_arrive() {
    let mut buf = RecvBuf::new(4096);
    buf.reserve(32);
    receive(&mut buf, &[9u8; 32]);
    // A header claiming 16 MiB does not reserve 16 MiB up front.
    buf.reserve(16 << 20);
    assert!(room(&mut buf) < 1 << 20);
    let mut have = 32;
    while have < 100_000 {
        buf.reserve(100_000);
        let room = room(&mut buf);
        let n = room.min(100_000 - have);
        receive(&mut buf, &vec![9u8; n]);
        have += n;
    }
    assert_eq!(
        buf.unconsumed().len(),
        100_000,
        "the whole frame is contiguous"
    );
    assert_eq!(buf.unconsumed().as_ptr() as usize % FRAME_ALIGN, 0);
}

#[test]
fn buffers_start_small_and_grow_when_reads_fill_them() {
    let mut buf = RecvBuf::new(64 << 10);
    buf.reserve(32);
    let first = room(&mut buf);
    assert!(first <= SMALL_CHUNK, "idle connections stay small");
    receive(&mut buf, &vec![1u8; first]);
    buf.consume(first);
    buf.reserve(32);
    assert!(room(&mut buf) >= 32 << 10, "busy ones grow");
}

#[test]
fn chunks_are_recycled_once_views_drop() {
    let mut buf = RecvBuf::new(4096);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        buf.reserve(4096);
        receive(&mut buf, &[3u8; 4096]);
        let v = buf.view(0, 4096);
        buf.consume(4096);
        seen.insert(v.as_ptr() as usize);
        drop(v);
    }
    assert!(
        seen.len() <= 2,
        "steady state reuses chunks, saw {}",
        seen.len()
    );
}

/// Installs a ring of `count` buffers of 4 KiB on this thread (no kernel:
/// the test plays the kernel) and leases buffer `bid` holding `bytes`.
fn ring_segment(bid: u16, bytes: &[u8]) -> NonNull<u8> {
    if !bufring::enabled() {
        let shape = bufring::RingShape {
            count: 4,
            size: 4096,
        };
        bufring::install(shape, |_, _, _, _| Ok(())).unwrap();
    }
    let ptr = bufring::take(bid, bytes.len()).expect("a buffer the kernel holds");
    // SAFETY: a leased buffer of 4 KiB that nothing else reads or writes yet.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
    ptr
}

/// Frame-like test bytes: `len` bytes (a multiple of 16) of value `fill`.
fn frame(fill: u8, len: usize) -> Vec<u8> {
    vec![fill; len]
}

#[test]
fn a_frame_straddling_two_segments_copies_only_its_second_part() {
    // Segment 0: frame A (160 B) and the first 96 B of B; segment 1: the last
    // 64 B of B, then C and D.
    let (a, b, c, d) = (frame(1, 160), frame(2, 160), frame(3, 160), frame(4, 48));
    let first = [&a[..], &b[..96]].concat();
    let second = [&b[96..], &c[..], &d[..]].concat();
    let mut buf = RecvBuf::new(4096);
    buf.reserve(32);
    buf.push_segment(0, ring_segment(0, &first), first.len());
    assert_eq!(&buf.unconsumed()[..160], &a[..]);
    buf.consume(160);
    buf.reserve(160); // B's header is in: the reader knows its length
    let ptr = ring_segment(1, &second);
    buf.push_segment(1, ptr, second.len());
    assert_eq!(buf.unconsumed(), &b[..], "B assembled");
    assert_eq!(buf.copied, 64, "only B's second part was copied");
    let held_b = buf.view(0, 160);
    buf.consume(160);
    assert_eq!(
        buf.unconsumed().as_ptr(),
        ptr.as_ptr().wrapping_add(64),
        "C in place"
    );
    assert_eq!(&buf.unconsumed()[..160], &c[..]);
    let held_c = buf.view(0, 160);
    buf.consume(160);
    assert_eq!(buf.unconsumed(), &d[..]);
    buf.consume(48);
    assert_eq!(buf.copied, 64);
    assert_eq!(
        (&*held_b, &*held_c),
        (&b[..], &c[..]),
        "views outlive the switch"
    );
    drop((buf, held_b, held_c));
    for bid in [0, 1] {
        assert!(
            bufring::take(bid, 1).is_some(),
            "buffer {bid} went back to the ring"
        );
        // Give the lease back: a ring with a buffer still leased is leaked
        // on purpose when it is dropped (the lease may outlive the core).
        bufring::release(bid);
    }
    bufring::uninstall();
}

/// Frames A, B, C (160 B each) in two ring segments cut `cut` bytes into B;
/// the reader knows `need` for B when the second arrives. Asserts that the
/// second segment is copied whole and that both buffers go back to the ring.
fn second_segment_copied_whole(cut: usize, need: usize) {
    let (a, b, c) = (frame(1, 160), frame(2, 160), frame(3, 160));
    let first = [&a[..], &b[..cut]].concat();
    let second = [&b[cut..], &c[..]].concat();
    let mut buf = RecvBuf::new(4096);
    buf.push_segment(2, ring_segment(2, &first), first.len());
    buf.consume(160);
    buf.reserve(need);
    buf.push_segment(3, ring_segment(3, &second), second.len());
    assert_eq!(buf.copied, second.len(), "copied whole");
    assert_eq!(buf.unconsumed(), &[&b[..], &c[..]].concat()[..]);
    buf.consume(320);
    drop(buf);
    for bid in [2, 3] {
        assert!(
            bufring::take(bid, 1).is_some(),
            "buffer {bid} went back to the ring"
        );
        // Give the lease back: a ring with a buffer still leased is leaked
        // on purpose when it is dropped (the lease may outlive the core).
        bufring::release(bid);
    }
    bufring::uninstall();
}

#[test]
fn a_segment_whose_rest_would_start_unaligned_is_copied_whole() {
    // B arrives in parts of 100 and 60 bytes: the rest would start at byte 60.
    second_segment_copied_whole(100, 160);
}

#[test]
fn a_straddling_header_is_copied_with_its_segment() {
    // Only 16 bytes of B's header in the first segment: its length is not known.
    second_segment_copied_whole(16, 32);
}

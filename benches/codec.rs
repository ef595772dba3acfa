//! Codec micro-benchmarks: frame header encode/decode, the header and data
//! digests, whole-frame encode/decode and incremental decoding of a buffer of
//! 1000 frames (each with the data digest, the default, and without it:
//! `*_no_digest`), and rkyv serialisation + validated access of the echo
//! message, for 64 B and 4 KiB payloads.
//!
//! Run: `cargo bench --bench codec` (HTML report: target/criterion/report/index.html).

// criterion_group! defines a pub fn without docs (criterion 0.7: the line
// whose rust-version fits the library's; 0.8 needs Rust 1.86).
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringrpc::protocol::header::{data_digest, header_digest};
use ringrpc::protocol::{
    decode_frame, encode_frame, DecodeOptions, Decoded, FrameHeader, FrameKind, DEFAULT_MAX_FRAME,
    HEADER_LEN,
};
use rkyv::rancor;

/// Payload sizes every group is measured with.
const SIZES: [usize; 2] = [64, 4096];
/// Frames in the incremental-decoding buffer.
const STREAM_FRAMES: usize = 1000;

/// The echo message of the `calls` and `peers` benches.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Echo {
    id: u64,
    payload: Vec<u8>,
}

fn header(call_id: u64, len: usize) -> FrameHeader {
    let mut h = FrameHeader::new(FrameKind::Request);
    h.call_id = call_id;
    h.method = 0x1234_5678;
    h.budget_us = 250_000;
    h.len = len as u32;
    h
}

fn size_label(n: usize) -> String {
    if n >= 1024 {
        format!("{}KiB", n / 1024)
    } else {
        format!("{n}B")
    }
}

fn bench_header(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/header");
    g.throughput(Throughput::Elements(1));
    let h = header(42, 64);
    g.bench_function("encode", |b| {
        let mut out = [0u8; HEADER_LEN];
        b.iter(|| {
            black_box(h).encode(black_box(0x1234_5678), &mut out);
            black_box(&out);
        })
    });
    let mut bytes = [0u8; HEADER_LEN];
    h.encode(0x1234_5678, &mut bytes);
    g.bench_function("decode", |b| {
        b.iter(|| FrameHeader::decode(black_box(&bytes)).expect("valid header"))
    });
    g.finish();
}

fn bench_digest(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/digest");
    let mut head = [0u8; HEADER_LEN];
    header(1, 64).encode(0, &mut head);
    g.throughput(Throughput::Bytes(28));
    g.bench_function("header", |b| b.iter(|| header_digest(black_box(&head))));
    for size in SIZES {
        let payload = vec![0xA5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(
            BenchmarkId::new("data", size_label(size)),
            &payload,
            |b, p| b.iter(|| data_digest(black_box(p))),
        );
    }
    g.finish();
}

/// `encode` / `decode` with the data digest (the default), `*_no_digest` without.
fn variant(name: &str, digest: bool) -> String {
    if digest {
        name.to_owned()
    } else {
        format!("{name}_no_digest")
    }
}

fn bench_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/frame");
    for size in SIZES {
        let payload = vec![0xA5u8; size];
        g.throughput(Throughput::Elements(1));
        for digest in [true, false] {
            let h = header(7, 0).with_data_digest(digest);
            // Encode into a reused buffer (as the connection writers do).
            g.bench_with_input(
                BenchmarkId::new(variant("encode", digest), size_label(size)),
                &payload,
                |b, p| {
                    let mut out = Vec::with_capacity(HEADER_LEN + size + 16);
                    b.iter(|| {
                        out.clear();
                        encode_frame(&mut out, h, black_box(p), DEFAULT_MAX_FRAME).expect("encode");
                        black_box(&out);
                    })
                },
            );
            let mut frame = Vec::new();
            encode_frame(&mut frame, h, &payload, DEFAULT_MAX_FRAME).expect("encode");
            g.bench_with_input(
                BenchmarkId::new(variant("decode", digest), size_label(size)),
                &frame,
                |b, f| {
                    b.iter(|| decode_frame(black_box(f), DecodeOptions::default()).expect("decode"))
                },
            );
        }
    }
    g.finish();
}

/// Decodes every frame of a buffer holding `STREAM_FRAMES` frames, front to back,
/// the way a connection reader walks its receive buffer.
fn bench_stream(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/decode_stream");
    for size in SIZES {
        let payload = vec![0xA5u8; size];
        for digest in [true, false] {
            let mut stream = Vec::new();
            for i in 0..STREAM_FRAMES {
                let h = header(i as u64, 0).with_data_digest(digest);
                encode_frame(&mut stream, h, &payload, DEFAULT_MAX_FRAME).expect("encode");
            }
            g.throughput(Throughput::Elements(STREAM_FRAMES as u64));
            g.bench_with_input(
                BenchmarkId::new(variant("1000_frames", digest), size_label(size)),
                &stream,
                |b, s| {
                    b.iter(|| {
                        let (mut pos, mut frames, mut sum) = (0, 0usize, 0u64);
                        while let Decoded::Frame(h) =
                            decode_frame(&s[pos..], DecodeOptions::default()).expect("decode")
                        {
                            sum = sum.wrapping_add(h.call_id);
                            pos += h.frame_len();
                            frames += 1;
                        }
                        assert_eq!(frames, STREAM_FRAMES);
                        sum
                    })
                },
            );
        }
    }
    g.finish();
}

fn bench_rkyv(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec/rkyv");
    g.throughput(Throughput::Elements(1));
    for size in SIZES {
        let msg = Echo {
            id: 0xDEAD_BEEF,
            payload: vec![0xA5u8; size],
        };
        let label = size_label(size);
        // Fresh output buffer per message.
        g.bench_with_input(BenchmarkId::new("to_bytes", &label), &msg, |b, m| {
            b.iter(|| rkyv::to_bytes::<rancor::Error>(black_box(m)).expect("serialise"))
        });
        // Reused output buffer (what the library does with its send buffer).
        g.bench_with_input(
            BenchmarkId::new("to_bytes_in_reused", &label),
            &msg,
            |b, m| {
                let mut out = rkyv::util::AlignedVec::<16>::with_capacity(size + 64);
                b.iter(|| {
                    out.clear();
                    out = rkyv::api::high::to_bytes_in::<_, rancor::Error>(
                        black_box(m),
                        std::mem::take(&mut out),
                    )
                    .expect("serialise");
                    black_box(out.len())
                })
            },
        );
        let bytes = rkyv::to_bytes::<rancor::Error>(&msg).expect("serialise");
        // Validated (bytecheck) access, as done for every received message.
        g.bench_with_input(BenchmarkId::new("access", &label), &bytes, |b, bytes| {
            b.iter(|| {
                let archived = rkyv::access::<ArchivedEcho, rancor::Error>(black_box(bytes))
                    .expect("valid archive");
                archived.id.to_native() ^ archived.payload.len() as u64
            })
        });
        // Serialise + validated access: one message's codec cost on both sides.
        g.bench_with_input(BenchmarkId::new("round_trip", &label), &msg, |b, m| {
            b.iter(|| {
                let bytes = rkyv::to_bytes::<rancor::Error>(black_box(m)).expect("serialise");
                let archived =
                    rkyv::access::<ArchivedEcho, rancor::Error>(&bytes).expect("valid archive");
                archived.id.to_native()
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = codec;
    config = config();
    targets = bench_header, bench_digest, bench_frame, bench_stream, bench_rkyv
}
criterion_main!(codec);

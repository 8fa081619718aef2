//! The batching stage: puts decoded inputs back in listing order and cuts them into model batches, dealt
//! round-robin to the devices.
//!
//! A batch never spans two output shards or mixes images with texts, and holds at most `max_batch` decoded
//! images or [`TEXT_WINDOW`] times as many texts (failed inputs ride along as metadata), so batches depend only on
//! the listing. The model thread runs a batch of texts as model calls of similar lengths.

use std::collections::BTreeMap;

use crossbeam_channel::{Receiver, Sender};

use super::decode::{Data, Decoded, Meta};
use super::inputs::Kind;
use super::shard::Plan;
use super::stages::{Span, StageTimes};

/// Texts are gathered this many model batches at a time, so that the model thread can sort them by length and
/// pad each call little (a short caption batched with a 77-token one costs as much as a long one).
pub const TEXT_WINDOW: usize = 8;

/// A batch for the model thread (one call for images, a few for texts), numbered in order.
#[derive(Debug)]
pub struct Batch {
    pub seq: u64,
    pub items: Vec<Meta>,
    pub data: BatchData,
}

/// The decoded inputs of a batch: `n` images' `[3, S, S]` pixels (each as decoded: the model converts them into its
/// upload buffer, so they are never gathered on the host) or `n` token sequences (`n` may be 0).
#[derive(Debug)]
pub enum BatchData {
    Pixels(Vec<Vec<f32>>),
    Tokens(Vec<Vec<u32>>),
}

impl BatchData {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Image => BatchData::Pixels(Vec::new()),
            Kind::Text => BatchData::Tokens(Vec::new()),
        }
    }
}

struct Open {
    kind: Kind,
    shard: u64,
    items: Vec<Meta>,
    data: BatchData,
    decoded: usize,
}

/// Runs until `decoded` is closed. `credits` gets one token back per input taken out of the reorder buffer,
/// which bounds how far the listing runs ahead. Returns early, without error, when a device has stopped.
pub fn run(
    decoded: Receiver<Decoded>,
    credits: Sender<()>,
    plan: &Plan,
    max_batch: usize,
    devices: &[Sender<Batch>],
    stages: &StageTimes,
) {
    let mut waiting: BTreeMap<u64, Decoded> = BTreeMap::new();
    let mut next = plan.next_pending(0);
    let mut seq = 0u64;
    let mut open: Option<Open> = None;
    let send = |open: Open, seq: &mut u64| -> bool {
        let batch = Batch {
            seq: *seq,
            items: open.items,
            data: open.data,
        };
        let device = &devices[(*seq % devices.len() as u64) as usize];
        *seq += 1;
        device.send(batch).is_ok()
    };
    while let Ok(item) = stages.time(Span::BatchingWaited, || decoded.recv()) {
        waiting.insert(item.meta.local, item);
        while let Some(item) = waiting.remove(&next) {
            // The lister may be gone already; the token is then not needed.
            let _ = credits.send(());
            next = plan.next_pending(next + 1);
            let shard = plan.shard_of(item.meta.local);
            if let Some(o) = open.take_if(|o| o.kind != item.meta.kind || o.shard != shard) {
                if !send(o, &mut seq) {
                    return;
                }
            }
            let o = open.get_or_insert_with(|| Open {
                kind: item.meta.kind,
                shard,
                items: Vec::new(),
                data: BatchData::new(item.meta.kind),
                decoded: 0,
            });
            match (item.data, &mut o.data) {
                (Some(Data::Pixels(p)), BatchData::Pixels(all)) => {
                    all.push(p);
                    o.decoded += 1;
                }
                (Some(Data::Tokens(t)), BatchData::Tokens(all)) => {
                    all.push(t);
                    o.decoded += 1;
                }
                _ => {}
            }
            o.items.push(item.meta);
            let full = |o: &mut Open| match o.kind {
                Kind::Image => o.decoded == max_batch,
                Kind::Text => o.decoded == max_batch * TEXT_WINDOW,
            };
            if let Some(o) = open.take_if(full) {
                if !send(o, &mut seq) {
                    return;
                }
            }
        }
    }
    if let Some(o) = open {
        send(o, &mut seq);
    }
}

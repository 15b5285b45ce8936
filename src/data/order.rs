//! Sample order and batching. The order of an epoch depends only on (seed, epoch, n): it is the
//! same on every platform and for every thread count, so a resumed run sees the same batches.

use super::rng::{SplitMix64, GOLDEN_GAMMA};
use super::Dataset;

/// The order in which epoch `epoch` visits `n` samples: a Fisher–Yates permutation of `0..n` drawn
/// from SplitMix64 seeded with `seed ^ epoch * 0x9E37_79B9_7F4A_7C15` (wrapping), or the identity
/// when `shuffle` is false.
///
/// # Panics
/// If `n` does not fit in a `u32` (data sets are far smaller).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<u32> {
    let n32 = u32::try_from(n).expect("epoch_order: more than u32::MAX samples");
    let mut order: Vec<u32> = (0..n32).collect();
    if shuffle {
        SplitMix64::new(seed ^ epoch.wrapping_mul(GOLDEN_GAMMA)).shuffle(&mut order);
    }
    order
}

/// Copies the samples `order[start..start + batch]` (fewer at the end of `order`) into `images`
/// (row-major, `sample_len` floats each) and `labels`, and returns how many it copied: `batch`, or
/// less for the last, incomplete batch, or 0 once `start >= order.len()`.
///
/// Training drops an incomplete last batch (the caller checks the returned count against
/// `batch`), like PyTorch's `DataLoader(drop_last=True)`; evaluation uses it.
///
/// # Panics
/// If `images` holds fewer than `batch * data.sample_len()` floats, `labels` fewer than `batch`,
/// or `order` names a sample outside `data`.
pub fn fill_batch(
    data: &Dataset,
    order: &[u32],
    start: usize,
    batch: usize,
    images: &mut [f32],
    labels: &mut [i32],
) -> usize {
    let sample_len = data.sample_len();
    let count = batch.min(order.len().saturating_sub(start));
    assert!(
        images.len() >= count * sample_len && labels.len() >= count,
        "fill_batch: buffers hold {} floats and {} labels, need {} and {}",
        images.len(),
        labels.len(),
        count * sample_len,
        count
    );
    if count == 0 {
        return 0;
    }
    for (k, &index) in order[start..start + count].iter().enumerate() {
        let i = index as usize;
        images[k * sample_len..(k + 1) * sample_len].copy_from_slice(data.sample(i));
        labels[k] = data.labels[i];
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_order() {
        // Pinned (and cross-checked against an independent Python transcription) so that an
        // accidental change to the generator or the shuffle is caught: resumed runs and
        // published results depend on these exact orders.
        assert_eq!(epoch_order(10, 42, 0, true), GOLDEN_42_0);
        assert_eq!(epoch_order(10, 42, 1, true), GOLDEN_42_1);
    }

    const GOLDEN_42_0: [u32; 10] = [8, 3, 6, 5, 4, 0, 9, 2, 1, 7];
    const GOLDEN_42_1: [u32; 10] = [6, 7, 4, 3, 9, 5, 0, 8, 2, 1];

    #[test]
    fn fill_batch_copies_and_reports_short_batches() {
        let data = Dataset {
            images: (0..10).map(|x| x as f32).collect(),
            labels: vec![0, 1, 2, 3, 4],
            sample_shape: vec![2],
            classes: 5,
        };
        let order = [4, 2, 0, 1, 3];
        let mut images = [0.0f32; 4];
        let mut labels = [0i32; 2];
        assert_eq!(fill_batch(&data, &order, 0, 2, &mut images, &mut labels), 2);
        assert_eq!(images, [8.0, 9.0, 4.0, 5.0]);
        assert_eq!(labels, [4, 2]);
        assert_eq!(fill_batch(&data, &order, 4, 2, &mut images, &mut labels), 1);
        assert_eq!(images[..2], [6.0, 7.0]);
        assert_eq!(labels[0], 3);
        assert_eq!(fill_batch(&data, &order, 5, 2, &mut images, &mut labels), 0);
        assert_eq!(
            fill_batch(&data, &order, 99, 2, &mut images, &mut labels),
            0
        );
    }
}

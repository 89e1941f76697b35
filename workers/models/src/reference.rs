//! The reference detector: finds the camera simulator's objects with plain tensor operations.
//!
//! The simulator (`panoptes-scene`) draws each object as a solid saturated
//! red, green or blue rectangle (person, car, bicycle) on a gray background, one object per
//! horizontal lane, so objects of the same class never share image rows. The detector, for a
//! `[B, 3, H, W]` input in `[0, 1]`, average-pooled by [`POOL`] first:
//!
//! 1. **colour masks**: per class `k`, pixel is on when channel `k` exceeds both other channels
//!    by more than [`DOMINANCE`]. For a pixel mixing a fraction `f` of the object's colour with
//!    any gray, that margin is exactly `f`, so 0.5 puts the mask edge where JPEG/down-scaling
//!    blur is half way: edges land within a pixel of the truth. Gray background, letterbox
//!    padding and the black/white barcode strip have a margin near 0.
//! 2. **row runs**: rows with at least [`MIN_ROW_PIXELS`] mask pixels are "on"; consecutive on
//!    rows form a run (one object), numbered by a cumulative sum of run starts. At most
//!    [`RUNS_PER_CLASS`] runs per class are kept.
//! 3. **extent**: a one-hot `[K, H]` run matrix times the `[H, W]` mask gives per-run column
//!    counts; columns covered in at least half of the run's rows give `x1..x2`, the run's rows
//!    give `y1..y2`.
//! 4. **score**: the fraction of the box covered by mask pixels (≈ 1 for a clean rectangle);
//!    runs under [`MIN_SIDE`] pixels in either direction score 0.
//! 5. rows `x1, y1, x2, y2, score, class` sorted by score: the `post_nms` contract, shape
//!    `[B, 3 * RUNS_PER_CLASS, 6]`, padding rows all zero.
//!
//! Every shape is fixed by the input size and there is no data-dependent control flow, so the
//! function traces into TorchScript and batches freely. Limitation (by design, it is a test
//! instrument): two same-coloured objects sharing rows merge into one box.

use tch::{Kind, Tensor};

/// Colour margin (channel minus the larger other channel) above which a pixel is on.
pub const DOMINANCE: f64 = 0.5;
/// The input is average-pooled by this factor first (4× less work; edges stay within about
/// a pixel because the pooled colour margin still crosses 0.5 half way through the blur).
pub const POOL: i64 = 2;
/// Minimum mask cells (pooled pixels) for a row to belong to an object.
pub const MIN_ROW_PIXELS: f64 = 2.0;
/// Minimum object side in pooled pixels.
pub const MIN_SIDE: f64 = 2.0;
/// Row runs (objects) kept per class.
pub const RUNS_PER_CLASS: i64 = 16;
/// Number of classes (the simulator's `person`, `car`, `bicycle`).
pub const NUM_CLASSES: i64 = 3;

/// The detector as a tensor function: `[B, 3, H, W]` → `[B, 3 * RUNS_PER_CLASS, 6]`.
pub fn detect(x: &Tensor) -> Tensor {
    let x = x.avg_pool2d([POOL, POOL], [POOL, POOL], [0, 0], false, true, None::<i64>);
    let size = x.size();
    let (h, w) = (size[2], size[3]);
    let opts = (Kind::Float, x.device());
    let big = 1.0e6;

    // 1. colour masks [B, 3, H, W]
    let (r, g, b) = (x.select(1, 0), x.select(1, 1), x.select(1, 2));
    let dr = &r - g.maximum(&b);
    let dg = &g - r.maximum(&b);
    let db = &b - r.maximum(&g);
    let mask = Tensor::stack(&[dr, dg, db], 1)
        .gt(DOMINANCE)
        .to_kind(Kind::Float);

    // 2. row runs [B, 3, H] and their one-hot matrix [B, 3, K, H]
    let on = mask
        .sum_dim_intlist([3i64].as_slice(), false, Kind::Float)
        .ge(MIN_ROW_PIXELS)
        .to_kind(Kind::Float);
    let prev = on.constant_pad_nd([1i64, 0]).narrow(2, 0, h);
    let start = &on * (prev.neg() + 1.0);
    let run_id = start.cumsum(2, Kind::Float) * &on;
    let ks = Tensor::arange_start(1, RUNS_PER_CLASS + 1, opts).view([1, 1, RUNS_PER_CLASS, 1]);
    let runs = run_id.unsqueeze(2).eq_tensor(&ks).to_kind(Kind::Float);
    let n_rows = runs.sum_dim_intlist([3i64].as_slice(), false, Kind::Float);

    // 3. extents
    let ys = Tensor::arange(h, opts).view([1, 1, 1, h]);
    let y1 = (&runs * &ys + (runs.neg() + 1.0) * big).amin([3i64].as_slice(), false);
    let y2 = (&runs * (&ys + 1.0)).amax([3i64].as_slice(), false);
    let col_count = runs.matmul(&mask); // [B, 3, K, W]
    let cols = col_count
        .ge_tensor(&(n_rows.unsqueeze(3) * 0.5))
        .to_kind(Kind::Float);
    let xs = Tensor::arange(w, opts).view([1, 1, 1, w]);
    let x1 = (&cols * &xs + (cols.neg() + 1.0) * big).amin([3i64].as_slice(), false);
    let x2 = (&cols * (&xs + 1.0)).amax([3i64].as_slice(), false);

    // 4. score
    let bw = (&x2 - &x1).clamp_min(0.0);
    let bh = (&y2 - &y1).clamp_min(0.0);
    let pixels = col_count.sum_dim_intlist([3i64].as_slice(), false, Kind::Float);
    let fill = (pixels / (&bw * &bh).clamp_min(1.0)).clamp(0.0, 1.0);
    let valid = n_rows
        .ge(MIN_SIDE)
        .logical_and(&bw.ge(MIN_SIDE))
        .to_kind(Kind::Float);
    let score = fill * valid;

    // 5. rows, padding zeroed, sorted by score
    let class = Tensor::arange(NUM_CLASSES, opts).view([1, NUM_CLASSES, 1]) + score.zeros_like();
    let keep = score.gt(0.0).to_kind(Kind::Float).unsqueeze(3);
    let scale = POOL as f64;
    let rows = (Tensor::stack(
        &[x1 * scale, y1 * scale, x2 * scale, y2 * scale, score, class],
        3,
    ) * keep)
        .flatten(1, 2);
    let n = NUM_CLASSES * RUNS_PER_CLASS;
    let (_, order) = rows.select(2, 4).topk(n, 1, true, true);
    rows.gather(1, &order.unsqueeze(2).expand([-1, -1, 6], false), false)
}

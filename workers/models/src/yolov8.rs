//! A network with the layer structure and compute of YOLOv8n, for performance work.
//!
//! Same topology as Ultralytics' `yolov8n.yaml` (width 0.25, depth 0.33, 80 classes, 640×640):
//! Conv-SiLU stem, C2f blocks (1, 2, 2, 1 bottlenecks), SPPF, FPN/PAN neck with C2f blocks, and
//! the decoupled anchor-free head (per level a 2×Conv + 1×1 box branch with 16-bin DFL and a
//! 2×Conv + 1×1 class branch), decoded in the graph to `[B, 84, 8400]` (`cx, cy, w, h` in input
//! pixels, then 80 sigmoid class scores): the `yolo_raw` contract. BatchNorm is folded into the
//! convolutions (conv with bias), as in an exported inference model. Weights are random
//! (seeded); the class-branch biases use Ultralytics' prior (`log(5 / nc / (640 / stride)²)`),
//! so, like a real model, almost nothing scores above the threshold on arbitrary frames.
//!
//! Counted by [`YoloV8nLike::new`]: 3,151,888 parameters (Ultralytics' fused YOLOv8n has
//! 3,151,904: the 16 extra are its fixed DFL weights, a constant here) and 8.74 GFLOPs
//! (2 × multiply-accumulates of all convolutions) per 640×640 image — the published YOLOv8n
//! figures are 3.2 M parameters and 8.7 GFLOPs.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Input side in pixels.
pub const INPUT_SIZE: i64 = 640;
/// Number of classes.
pub const NUM_CLASSES: i64 = 80;
/// DFL bins per box side.
const REG_MAX: i64 = 16;
/// Strides of the three detection levels.
const STRIDES: [i64; 3] = [8, 16, 32];

/// Running cost of the network as it is built: input side, FLOPs.
#[derive(Debug, Default)]
struct Cost {
    flops: f64,
}

/// Conv (BN folded) + SiLU.
#[derive(Debug)]
struct Conv {
    conv: nn::Conv2D,
}

impl Conv {
    fn new(p: nn::Path, c1: i64, c2: i64, k: i64, s: i64, hw: &mut i64, cost: &mut Cost) -> Self {
        let cfg = nn::ConvConfig {
            stride: s,
            padding: k / 2,
            ..Default::default()
        };
        let out = (*hw + 2 * (k / 2) - k) / s + 1;
        cost.flops += 2.0 * (k * k * c1 * c2 * out * out) as f64;
        *hw = out;
        Self {
            conv: nn::conv2d(p, c1, c2, k, cfg),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.apply(&self.conv).silu()
    }
}

/// Two 3×3 convs with an optional residual.
#[derive(Debug)]
struct Bottleneck {
    cv1: Conv,
    cv2: Conv,
    add: bool,
}

/// CSP bottleneck with 2 convolutions (Ultralytics `C2f`).
#[derive(Debug)]
struct C2f {
    cv1: Conv,
    cv2: Conv,
    m: Vec<Bottleneck>,
}

impl C2f {
    fn new(
        p: nn::Path,
        c1: i64,
        c2: i64,
        n: i64,
        shortcut: bool,
        hw: i64,
        cost: &mut Cost,
    ) -> Self {
        let c = c2 / 2;
        let mut s = hw;
        let cv1 = Conv::new(&p / "cv1", c1, 2 * c, 1, 1, &mut s, cost);
        let m = (0..n)
            .map(|i| {
                let q = &p / "m" / i;
                Bottleneck {
                    cv1: Conv::new(&q / "cv1", c, c, 3, 1, &mut s, cost),
                    cv2: Conv::new(&q / "cv2", c, c, 3, 1, &mut s, cost),
                    add: shortcut,
                }
            })
            .collect();
        let cv2 = Conv::new(&p / "cv2", (2 + n) * c, c2, 1, 1, &mut s, cost);
        Self { cv1, cv2, m }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let mut ys = self.cv1.forward(x).chunk(2, 1);
        for b in &self.m {
            let last = &ys[ys.len() - 1];
            let y = b.cv2.forward(&b.cv1.forward(last));
            ys.push(if b.add { y + last } else { y });
        }
        self.cv2.forward(&Tensor::cat(&ys, 1))
    }
}

/// Spatial pyramid pooling, fast (three chained 5×5 max-pools).
#[derive(Debug)]
struct Sppf {
    cv1: Conv,
    cv2: Conv,
}

impl Sppf {
    fn forward(&self, x: &Tensor) -> Tensor {
        let a = self.cv1.forward(x);
        let pool = |t: &Tensor| t.max_pool2d([5, 5], [1, 1], [2, 2], [1, 1], false);
        let b = pool(&a);
        let c = pool(&b);
        let d = pool(&c);
        self.cv2.forward(&Tensor::cat(&[a, b, c, d], 1))
    }
}

/// One level's decoupled head: box branch and class branch.
#[derive(Debug)]
struct HeadLevel {
    box_convs: [Conv; 2],
    box_out: nn::Conv2D,
    cls_convs: [Conv; 2],
    cls_out: nn::Conv2D,
}

impl HeadLevel {
    /// Level `i` of the detection head over `ch` input channels at `level_hw`, its class
    /// biases set to YOLOv8's initial prior for that level's stride.
    fn new(q: nn::Path<'_>, i: usize, ch: i64, level_hw: i64, cost: &mut Cost) -> Self {
        // c2 = max(16, 64 / 4, 4 * 16) = 64, c3 = max(64, min(80, 100)) = 80.
        let (c2, c3) = (64, 80);
        let mut s = level_hw;
        let box_convs = [
            Conv::new(&q / "box0", ch, c2, 3, 1, &mut s, cost),
            Conv::new(&q / "box1", c2, c2, 3, 1, &mut s, cost),
        ];
        let box_out = nn::conv2d(&q / "box2", c2, 4 * REG_MAX, 1, Default::default());
        let cls_convs = [
            Conv::new(&q / "cls0", ch, c3, 3, 1, &mut s, cost),
            Conv::new(&q / "cls1", c3, c3, 3, 1, &mut s, cost),
        ];
        let mut cls_out = nn::conv2d(&q / "cls2", c3, NUM_CLASSES, 1, Default::default());
        let area = (s * s) as f64;
        cost.flops += 2.0 * area * ((c2 * 4 * REG_MAX) + (c3 * NUM_CLASSES)) as f64;
        let prior =
            (5.0 / NUM_CLASSES as f64 / (INPUT_SIZE as f64 / STRIDES[i] as f64).powi(2)).ln();
        if let Some(bias) = cls_out.bs.as_mut() {
            tch::no_grad(|| {
                let _ = bias.fill_(prior);
            });
        }
        Self {
            box_convs,
            box_out,
            cls_convs,
            cls_out,
        }
    }
}

/// Anchor points (grid cell centres, all x then all y) and strides of the 8400 candidates.
fn anchor_grid() -> (Vec<f32>, Vec<f32>) {
    let mut anchors = Vec::new();
    let mut strides = Vec::new();
    for &st in &STRIDES {
        let g = INPUT_SIZE / st;
        for y in 0..g {
            for x in 0..g {
                anchors.push((x as f32 + 0.5, y as f32 + 0.5));
                strides.push(st as f32);
            }
        }
    }
    let ax = anchors
        .iter()
        .map(|a| a.0)
        .chain(anchors.iter().map(|a| a.1))
        .collect();
    (ax, strides)
}

/// The YOLOv8n-like network.
#[derive(Debug)]
pub struct YoloV8nLike {
    backbone: Vec<Conv>,
    c2f: Vec<C2f>,
    sppf: Sppf,
    down: [Conv; 2],
    heads: Vec<HeadLevel>,
    anchors: Tensor,
    strides: Tensor,
    bins: Tensor,
    /// Trainable parameters (BN folded).
    pub parameters: i64,
    /// FLOPs (2 × multiply-accumulates) of all convolutions for one 640×640 image.
    pub flops: f64,
}

impl YoloV8nLike {
    /// Builds the network with random weights in `vs` (seed them with `tch::manual_seed`).
    pub fn new(vs: &nn::VarStore) -> Self {
        let p = vs.root();
        let mut cost = Cost::default();
        let mut hw = INPUT_SIZE;
        // Backbone: stem P1, P2, C2f, P3, C2f, P4, C2f, P5, C2f, SPPF.
        let mut backbone = Vec::new();
        let mut c2f = Vec::new();
        backbone.push(Conv::new(&p / "b0", 3, 16, 3, 2, &mut hw, &mut cost));
        backbone.push(Conv::new(&p / "b1", 16, 32, 3, 2, &mut hw, &mut cost));
        c2f.push(C2f::new(&p / "b2", 32, 32, 1, true, hw, &mut cost));
        backbone.push(Conv::new(&p / "b3", 32, 64, 3, 2, &mut hw, &mut cost));
        let hw3 = hw;
        c2f.push(C2f::new(&p / "b4", 64, 64, 2, true, hw, &mut cost));
        backbone.push(Conv::new(&p / "b5", 64, 128, 3, 2, &mut hw, &mut cost));
        let hw4 = hw;
        c2f.push(C2f::new(&p / "b6", 128, 128, 2, true, hw, &mut cost));
        backbone.push(Conv::new(&p / "b7", 128, 256, 3, 2, &mut hw, &mut cost));
        let hw5 = hw;
        c2f.push(C2f::new(&p / "b8", 256, 256, 1, true, hw, &mut cost));
        let mut s = hw5;
        let sppf = Sppf {
            cv1: Conv::new(&p / "sppf" / "cv1", 256, 128, 1, 1, &mut s, &mut cost),
            cv2: Conv::new(&p / "sppf" / "cv2", 512, 256, 1, 1, &mut s, &mut cost),
        };
        // Neck: top-down (FPN) then bottom-up (PAN). Its C2f blocks take two levels
        // concatenated and have one bottleneck without shortcut.
        let neck = |name: &str, c_in: i64, c_out: i64, hw: i64, cost: &mut Cost| {
            C2f::new(&p / name, c_in, c_out, 1, false, hw, cost)
        };
        c2f.push(neck("n12", 256 + 128, 128, hw4, &mut cost));
        c2f.push(neck("n15", 128 + 64, 64, hw3, &mut cost));
        let mut s3 = hw3;
        let d0 = Conv::new(&p / "n16", 64, 64, 3, 2, &mut s3, &mut cost);
        c2f.push(neck("n18", 64 + 128, 128, hw4, &mut cost));
        let mut s4 = hw4;
        let d1 = Conv::new(&p / "n19", 128, 128, 3, 2, &mut s4, &mut cost);
        c2f.push(neck("n21", 128 + 256, 256, hw5, &mut cost));
        let heads = [64i64, 128, 256]
            .iter()
            .zip(&[hw3, hw4, hw5])
            .enumerate()
            .map(|(i, (&ch, &level_hw))| {
                HeadLevel::new(&p / "head" / i as i64, i, ch, level_hw, &mut cost)
            })
            .collect();
        let (ax, strides) = anchor_grid();
        let n = strides.len() as i64;
        let parameters = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        Self {
            backbone,
            c2f,
            sppf,
            down: [d0, d1],
            heads,
            anchors: Tensor::from_slice(&ax)
                .view([1, 2, n])
                .to_device(vs.device()),
            strides: Tensor::from_slice(&strides)
                .view([1, 1, n])
                .to_device(vs.device()),
            bins: Tensor::arange(REG_MAX, (Kind::Float, vs.device())).view([1, 1, REG_MAX, 1]),
            parameters,
            flops: cost.flops,
        }
    }

    /// Runs the network: `[B, 3, 640, 640]` → `[B, 84, 8400]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b = &self.backbone;
        let c = &self.c2f;
        let x = b[1].forward(&b[0].forward(x));
        let x = c[0].forward(&x);
        let p3 = c[1].forward(&b[2].forward(&x));
        let p4 = c[2].forward(&b[3].forward(&p3));
        let p5 = self.sppf.forward(&c[3].forward(&b[4].forward(&p4)));
        let up = |t: &Tensor| {
            let s = t.size();
            t.upsample_nearest2d([s[2] * 2, s[3] * 2], None, None)
        };
        let n12 = c[4].forward(&Tensor::cat(&[up(&p5), p4], 1));
        let n15 = c[5].forward(&Tensor::cat(&[up(&n12), p3], 1));
        let n18 = c[6].forward(&Tensor::cat(&[self.down[0].forward(&n15), n12], 1));
        let n21 = c[7].forward(&Tensor::cat(&[self.down[1].forward(&n18), p5], 1));
        let levels: Vec<Tensor> = [n15, n18, n21]
            .iter()
            .zip(&self.heads)
            .map(|(f, h)| {
                let bx = h.box_convs[1]
                    .forward(&h.box_convs[0].forward(f))
                    .apply(&h.box_out);
                let cl = h.cls_convs[1]
                    .forward(&h.cls_convs[0].forward(f))
                    .apply(&h.cls_out);
                Tensor::cat(&[bx, cl], 1).flatten(2, 3)
            })
            .collect();
        let all = Tensor::cat(&levels, 2); // [B, 64 + 80, 8400]
        let parts = all.split_with_sizes([4 * REG_MAX, NUM_CLASSES], 1);
        // DFL: expected bin of a softmax over 16 bins per side → distances (lt, rb) in cells.
        let dist = (parts[0].unflatten(1, [4, REG_MAX]).softmax(2, Kind::Float) * &self.bins)
            .sum_dim_intlist([2i64].as_slice(), false, Kind::Float);
        let lt = dist.narrow(1, 0, 2);
        let rb = dist.narrow(1, 2, 2);
        let x1y1 = &self.anchors - lt;
        let x2y2 = &self.anchors + rb;
        let cxy = (&x1y1 + &x2y2) * 0.5;
        let wh = x2y2 - x1y1;
        let boxes = Tensor::cat(&[cxy, wh], 1) * &self.strides;
        Tensor::cat(&[boxes, parts[1].sigmoid()], 1)
    }
}

impl Module for YoloV8nLike {
    fn forward(&self, xs: &Tensor) -> Tensor {
        YoloV8nLike::forward(self, xs)
    }
}

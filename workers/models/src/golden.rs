//! Golden sets from the camera simulator's scenes: JPEG frames with exact ground truth.
//!
//! Frame `i` of a set is the scene of camera `golden-{i % 7}` (seed `seed + i / 7`, 3 to 6
//! objects) at frame index `1000 + 97 i + 13 seed`, rendered at twice the requested size,
//! halved with a 2×2 box filter and JPEG-encoded at [`JPEG_QUALITY`], as an ingest node
//! scales a camera and publishes its frames; the ground truth is the scene's exact boxes
//! halved. The same arguments always give the same set (and the same id). The index format
//! is [`panoptes_workers::validate::golden`]'s.

use std::path::Path;

use panoptes_scene::{self as scene, SceneSpec};
use panoptes_workers::validate::golden::{GoldenFrame, GoldenIndex, GoldenObject, GoldenSet};

use crate::GenerateError;

/// JPEG quality of golden frames (the ingest node's default).
pub const JPEG_QUALITY: u8 = 80;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GoldenSpec {
    /// Name of the set (the part of its id before `@`).
    pub name: String,
    /// Number of frames.
    pub frames: usize,
    /// Frame width (even).
    pub width: u32,
    /// Frame height (even).
    pub height: u32,
    /// Scene seed.
    pub seed: u64,
}

impl Default for GoldenSpec {
    fn default() -> Self {
        Self {
            name: "scenes".into(),
            frames: 40,
            width: 640,
            height: 360,
            seed: 1,
        }
    }
}

/// Cameras cycled through.
const CAMERAS: usize = 7;

/// Writes the set's JPEGs and `index.json` into `dir` and opens it.
pub fn generate_golden(dir: &Path, spec: &GoldenSpec) -> Result<GoldenSet, GenerateError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| GenerateError::Io { path, source }
    };
    let golden = |message: String| GenerateError::Golden { message };
    if spec.frames == 0 || spec.width < 16 || spec.height < 16 {
        return Err(golden(format!(
            "need at least one frame of at least 16x16, got {} of {}x{}",
            spec.frames, spec.width, spec.height
        )));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (w, h) = (spec.width & !1, spec.height & !1);
    let mut rgb = Vec::new();
    let mut frames = Vec::with_capacity(spec.frames);
    for i in 0..spec.frames {
        let camera = format!("golden-{}", i % CAMERAS);
        let scene_spec = SceneSpec {
            width: 2 * w,
            height: 2 * h,
            objects: 3 + (i % 4) as u32,
            seed: spec.seed + (i / CAMERAS) as u64,
        };
        let index = 1_000 + i as u64 * 97 + spec.seed * 13;
        scene::render_rgb(&scene_spec, &camera, index, &mut rgb);
        let half = panoptes_scene::halve_rgb(&rgb, 2 * w as usize, 2 * h as usize);
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, JPEG_QUALITY)
            .encode(&half, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .map_err(|e| golden(format!("JPEG encoding failed: {e}")))?;
        let file = format!("{i:06}.jpg");
        let path = dir.join(&file);
        std::fs::write(&path, &jpeg).map_err(io(&path))?;
        let objects = scene::ground_truth(&scene_spec, &camera, index)
            .into_iter()
            .map(|b| GoldenObject {
                class: b.class_name().to_owned(),
                x1: b.x1 / 2.0,
                y1: b.y1 / 2.0,
                x2: b.x2 / 2.0,
                y2: b.y2 / 2.0,
            })
            .collect();
        frames.push(GoldenFrame {
            file,
            width: w,
            height: h,
            objects,
        });
    }
    let index = GoldenIndex {
        name: spec.name.clone(),
        frames,
    };
    index.validate().map_err(golden)?;
    index.write(dir).map_err(|e| golden(e.to_string()))?;
    GoldenSet::open(dir).map_err(|e| golden(e.to_string()))
}

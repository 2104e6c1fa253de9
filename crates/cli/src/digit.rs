//! Any greyscale or colour picture of a digit turned into an MNIST sample: light ink on black, fitted in 20×20, centred by mass in 28×28.
//!
//! MNIST's digits were prepared this way (LeCun et al., the MNIST page): each was scaled,
//! keeping its aspect ratio, to fit a 20×20 box (anti-aliased, hence the grey levels), then
//! placed in a 28×28 field so that its centre of mass lies at the centre. A photographed or
//! drawn digit is usually dark on light, so a picture whose border is lighter than mid-grey
//! is inverted first.

use crate::CliError;
use image::imageops::{self, FilterType};
use image::{GrayImage, Luma};
use std::path::Path;

/// The side of an MNIST image.
pub const SIDE: u32 = 28;
/// The side of the box the digit is scaled into.
pub const BOX: u32 = 20;

/// Reads `path` (PNG or PGM/PPM/PBM, any size, any colour type) and prepares it as
/// [`mnist_like`] does.
///
/// # Errors
/// [`CliError::Failed`] naming the file for one that cannot be read or decoded (wrong
/// format, truncated), [`CliError::Usage`] for a picture with no ink in it.
pub fn load(path: &Path) -> Result<[u8; (SIDE * SIDE) as usize], CliError> {
    let shown = path.display();
    let picture = image::io::Reader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| CliError::Failed {
            doing: format!("reading {shown}"),
            cause: e.to_string(),
        })?
        .decode()
        .map_err(|e| CliError::Failed {
            doing: format!("decoding {shown} (manabi reads PNG and PGM/PPM/PBM)"),
            cause: e.to_string(),
        })?;
    mnist_like(&picture.to_luma8()).ok_or_else(|| {
        CliError::Usage(format!(
            "{shown}: the picture is blank (no pixel differs from its background)"
        ))
    })
}

/// The MNIST preparation of one greyscale picture, or `None` if it has no ink: light ink
/// on black (inverted if the border is light), cropped to the ink, scaled to fit 20×20 with
/// its aspect ratio kept, and pasted into 28×28 with its centre of mass at the centre.
pub fn mnist_like(picture: &GrayImage) -> Option<[u8; (SIDE * SIDE) as usize]> {
    let (w, h) = picture.dimensions();
    if w == 0 || h == 0 {
        return None;
    }
    // The border's mean decides which shade is the background.
    let border: Vec<u8> = picture
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x == w - 1 || *y == h - 1)
        .map(|(_, _, p)| p[0])
        .collect();
    let mean = border.iter().map(|&v| f64::from(v)).sum::<f64>() / border.len() as f64;
    let invert = mean > 127.5;
    let ink = GrayImage::from_fn(w, h, |x, y| {
        let v = picture.get_pixel(x, y)[0];
        Luma([if invert { 255 - v } else { v }])
    });
    // Ink is anything clearly above the background's level.
    let background = if invert { 255.0 - mean } else { mean };
    let threshold = (background + 32.0).min(250.0) as u8;
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    for (x, y, p) in ink.enumerate_pixels() {
        if p[0] > threshold {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    if x0 > x1 {
        return None;
    }
    let crop = imageops::crop_imm(&ink, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    // Subtract the background so that it is black, then stretch the ink to full range.
    let floor = background.round() as u8;
    let crop = GrayImage::from_fn(crop.width(), crop.height(), |x, y| {
        Luma([crop.get_pixel(x, y)[0].saturating_sub(floor)])
    });
    let top = crop.pixels().map(|p| p[0]).max().unwrap_or(0).max(1);
    let crop = GrayImage::from_fn(crop.width(), crop.height(), |x, y| {
        let v = u32::from(crop.get_pixel(x, y)[0]) * 255 / u32::from(top);
        Luma([v as u8])
    });
    let (cw, ch) = crop.dimensions();
    let scale = f64::from(BOX) / f64::from(cw.max(ch));
    let (sw, sh) = (
        ((f64::from(cw) * scale).round() as u32).clamp(1, BOX),
        ((f64::from(ch) * scale).round() as u32).clamp(1, BOX),
    );
    let digit = imageops::resize(&crop, sw, sh, FilterType::Triangle);
    // Centre of mass of the scaled digit.
    let (mut mass, mut mx, mut my) = (0.0, 0.0, 0.0);
    for (x, y, p) in digit.enumerate_pixels() {
        let v = f64::from(p[0]);
        (mass, mx, my) = (mass + v, mx + v * f64::from(x), my + v * f64::from(y));
    }
    let (cx, cy) = if mass > 0.0 {
        (mx / mass, my / mass)
    } else {
        (f64::from(sw) / 2.0, f64::from(sh) / 2.0)
    };
    // The offset that puts the centre of mass at the field's centre, kept inside the field.
    let centre = f64::from(SIDE) / 2.0;
    let place =
        |c: f64, size: u32| ((centre - c - 0.5).round() as i64).clamp(0, i64::from(SIDE - size));
    let (ox, oy) = (place(cx, sw), place(cy, sh));
    let mut out = [0u8; (SIDE * SIDE) as usize];
    for (x, y, p) in digit.enumerate_pixels() {
        let (tx, ty) = (ox as u32 + x, oy as u32 + y);
        out[(ty * SIDE + tx) as usize] = p[0];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dark "1" (a vertical bar) on white, off centre in a large picture.
    fn bar_on_white() -> GrayImage {
        GrayImage::from_fn(90, 60, |x, y| {
            if (10..16).contains(&x) && (5..45).contains(&y) {
                Luma([20])
            } else {
                Luma([235])
            }
        })
    }

    #[test]
    fn a_dark_digit_on_white_becomes_light_on_black_fitted_and_centred() {
        let img = mnist_like(&bar_on_white()).unwrap();
        let at = |x: usize, y: usize| img[y * 28 + x];
        // The border is black; the bar is 20 rows tall and stands in the middle.
        assert!((0..28).all(|i| at(i, 0) == 0 && at(0, i) == 0 && at(27, i) == 0));
        let rows_with_ink = (0..28).filter(|&y| (0..28).any(|x| at(x, y) > 0)).count();
        assert_eq!(rows_with_ink, 20);
        assert_eq!(at(14, 14), 255);
        let ink: Vec<usize> = (0..28).filter(|&x| at(x, 14) > 128).collect();
        let mid = (ink[0] + ink[ink.len() - 1]) as f64 / 2.0;
        assert!((mid - 13.5).abs() <= 1.0, "{ink:?}");
    }

    #[test]
    fn light_on_black_is_kept_and_blank_pictures_are_refused() {
        let inverted = GrayImage::from_fn(90, 60, |x, y| {
            Luma([255 - bar_on_white().get_pixel(x, y)[0]])
        });
        assert_eq!(mnist_like(&inverted), mnist_like(&bar_on_white()));
        assert_eq!(
            mnist_like(&GrayImage::from_pixel(40, 40, Luma([200]))),
            None
        );
        assert_eq!(mnist_like(&GrayImage::new(0, 0)), None);
    }

    #[test]
    fn an_mnist_digit_survives_the_preparation() {
        // An MNIST-like digit already fitted in 20×20 and centred comes back close to itself.
        let mut pic = GrayImage::new(28, 28);
        for y in 4..24 {
            for x in 10..18 {
                pic.put_pixel(x, y, Luma([255]));
            }
        }
        let out = mnist_like(&pic).unwrap();
        let same = (0..784)
            .filter(|&i| (out[i] > 128) == (pic.as_raw()[i] > 128))
            .count();
        assert!(same >= 784 - 28, "{same}");
    }
}

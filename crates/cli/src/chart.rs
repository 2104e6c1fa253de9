//! The accuracy and loss chart as a PNG, drawn with an embedded font (no system fonts needed).

use crate::CliError;
use crate::error::Context;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::path::Path;
use std::sync::Once;

/// One evaluation point of a run.
#[derive(Clone, Copy, Debug)]
pub struct EpochPoint {
    /// Epochs completed (fractional for the book's i % iter_per_epoch == 0 schedule).
    pub epoch: f64,
    /// Accuracy on the training set.
    pub train_acc: f64,
    /// Accuracy on the test set.
    pub test_acc: f64,
    /// Mean training loss since the previous point.
    pub loss: f64,
}

static FONT: Once = Once::new();

/// Registers DejaVu Sans (from the `dejavu` crate, compiled in) as plotters' sans-serif.
fn register() -> Result<(), CliError> {
    let mut result = Ok(());
    FONT.call_once(|| {
        if register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular()).is_err() {
            result = Err(CliError::Output(
                "the embedded chart font could not be loaded".into(),
            ));
        }
    });
    result
}

/// Draws accuracy (train, test) and loss per epoch side by side into a PNG at `path`.
pub fn draw(path: &Path, points: &[EpochPoint], title: &str) -> Result<(), CliError> {
    register()?;
    let shown = path.display();
    let root = BitMapBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE).context(|| format!("drawing {shown}"))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .context(|| format!("drawing {shown}"))?;
    let (left, right) = root.split_horizontally(500);
    let max_epoch = points.iter().map(|p| p.epoch).fold(1.0, f64::max);
    draw_accuracy(&left, path, points, max_epoch)?;
    draw_loss(&right, path, points, max_epoch)?;
    root.present().context(|| format!("writing {shown}"))?;
    Ok(())
}

/// The left half of [`draw`]'s chart: train and test accuracy per epoch, with a legend, from
/// a floor of at most 0.9 up to 1. `path` is the file, for messages.
fn draw_accuracy(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    path: &Path,
    points: &[EpochPoint],
    max_epoch: f64,
) -> Result<(), CliError> {
    let shown = path.display();
    let min_acc = points
        .iter()
        .map(|p| p.train_acc.min(p.test_acc))
        .fold(1.0, f64::min)
        .min(0.9);
    let floor = (min_acc * 20.0).floor() / 20.0;

    let mut acc = ChartBuilder::on(area)
        .caption("accuracy", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_epoch, floor..1.0)
        .context(|| format!("drawing {shown}"))?;
    acc.configure_mesh()
        .x_desc("epoch")
        .y_desc("accuracy")
        .draw()
        .context(|| format!("drawing {shown}"))?;
    let series = [
        (
            "train",
            BLUE,
            points
                .iter()
                .map(|p| (p.epoch, p.train_acc))
                .collect::<Vec<_>>(),
        ),
        (
            "test",
            RED,
            points.iter().map(|p| (p.epoch, p.test_acc)).collect(),
        ),
    ];
    for (label, color, data) in series {
        acc.draw_series(LineSeries::new(data.clone(), color.stroke_width(2)))
            .context(|| format!("drawing {shown}"))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        acc.draw_series(data.into_iter().map(|p| Circle::new(p, 3, color.filled())))
            .context(|| format!("drawing {shown}"))?;
    }
    acc.configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .context(|| format!("drawing {shown}"))?;
    Ok(())
}

/// The right half of [`draw`]'s chart: the mean training loss per epoch, from 0. `path` is
/// the file, for messages.
fn draw_loss(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    path: &Path,
    points: &[EpochPoint],
    max_epoch: f64,
) -> Result<(), CliError> {
    let shown = path.display();
    let max_loss = points.iter().map(|p| p.loss).fold(0.0, f64::max).max(0.1) * 1.05;
    let mut loss = ChartBuilder::on(area)
        .caption("training loss", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..max_epoch, 0.0..max_loss)
        .context(|| format!("drawing {shown}"))?;
    loss.configure_mesh()
        .x_desc("epoch")
        .y_desc("cross-entropy")
        .draw()
        .context(|| format!("drawing {shown}"))?;
    let data: Vec<(f64, f64)> = points.iter().map(|p| (p.epoch, p.loss)).collect();
    loss.draw_series(LineSeries::new(data.clone(), BLACK.stroke_width(2)))
        .context(|| format!("drawing {shown}"))?;
    loss.draw_series(data.into_iter().map(|p| Circle::new(p, 3, BLACK.filled())))
        .context(|| format!("drawing {shown}"))?;
    Ok(())
}

/// One line of a [`Panel`]: accuracy per epoch.
#[derive(Clone, Debug)]
pub struct Line {
    /// The legend's text.
    pub label: String,
    /// Its colour.
    pub color: RGBColor,
    /// Dashed rather than solid (the book draws the run without the technique dashed).
    pub dashed: bool,
    /// (epoch, accuracy) points.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a grid: a caption and its lines, accuracy from 0 to 1.
#[derive(Clone, Debug)]
pub struct Panel {
    /// Shown above the chart.
    pub caption: String,
    /// Its lines.
    pub lines: Vec<Line>,
    /// Draw the legend (once per figure is usually enough).
    pub legend: bool,
}

/// Draws `panels` in a grid of `cols` columns into a PNG at `path`, each `cell` pixels.
pub fn draw_panels(
    path: &Path,
    title: &str,
    panels: &[Panel],
    cols: usize,
    cell: (u32, u32),
) -> Result<(), CliError> {
    register()?;
    let shown = path.display();
    let cols = cols.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    let size = (cell.0 * cols as u32, cell.1 * rows as u32 + 40);
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).context(|| format!("drawing {shown}"))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .context(|| format!("drawing {shown}"))?;
    for (area, panel) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let max_epoch = panel
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.caption, ("sans-serif", 14))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(36)
            .build_cartesian_2d(0.0..max_epoch, 0.0..1.0)
            .context(|| format!("drawing {shown}"))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_labels(6)
            .max_light_lines(1)
            .draw()
            .context(|| format!("drawing {shown}"))?;
        for line in &panel.lines {
            let style = line.color.stroke_width(2);
            let drawn = if line.dashed {
                chart.draw_series(DashedLineSeries::new(line.points.clone(), 6, 4, style))
            } else {
                chart.draw_series(LineSeries::new(line.points.clone(), style))
            };
            drawn
                .context(|| format!("drawing {shown}"))?
                .label(line.label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        if panel.legend {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .context(|| format!("drawing {shown}"))?;
        }
    }
    root.present().context(|| format!("writing {shown}"))?;
    Ok(())
}

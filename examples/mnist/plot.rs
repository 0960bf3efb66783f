//! The run's accuracy and loss per epoch as a PNG, like the book's accuracy figure.

use std::error::Error;
use std::ops::Range;
use std::path::Path;

use chainrule::train::Evaluation;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::EpochRecord;

/// DejaVu Sans (see DejaVuSans-LICENSE.txt), so the plot needs no fonts on the machine.
static FONT: &[u8] = include_bytes!("DejaVuSans.ttf");

/// Draws accuracy (left) and loss (right), train and test, per epoch.
pub fn draw(history: &[EpochRecord], title: &str, path: &Path) -> Result<(), Box<dyn Error>> {
    register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| "the bundled font could not be read")?;
    let root = BitMapBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&format!("{title} on MNIST"), ("sans-serif", 26))?;
    let (left, right) = root.split_horizontally(600);

    let values = |metric: fn(&Evaluation) -> f64| {
        history
            .iter()
            .flat_map(move |r| [metric(&r.train), metric(&r.test)])
    };
    // Accuracy from the tenth below the lowest value up to 1; loss from 0 up to the highest.
    let low = values(|e| e.accuracy).fold(1.0, f64::min);
    let floor = ((low * 10.0).floor() / 10.0).clamp(0.0, 0.9);
    let high = values(|e| e.loss).fold(0.0, f64::max).max(1e-3) * 1.05;
    let accuracy = Panel {
        name: "accuracy",
        y: floor..1.0,
        legend: SeriesLabelPosition::LowerRight,
        metric: |e| e.accuracy,
    };
    let loss = Panel {
        name: "loss",
        y: 0.0..high,
        legend: SeriesLabelPosition::UpperRight,
        metric: |e| e.loss,
    };
    accuracy.draw(&left, history)?;
    loss.draw(&right, history)?;
    root.present()?;
    Ok(())
}

/// Which evaluation of an epoch a line shows.
type Pick = fn(&EpochRecord) -> &Evaluation;

/// One chart: a metric of the train and test evaluations against the epoch.
struct Panel {
    name: &'static str,
    y: Range<f64>,
    legend: SeriesLabelPosition,
    metric: fn(&Evaluation) -> f64,
}

impl Panel {
    fn draw(
        self,
        area: &DrawingArea<BitMapBackend, Shift>,
        history: &[EpochRecord],
    ) -> Result<(), Box<dyn Error>> {
        let epochs = history.last().map_or(1, |r| r.epoch.max(1)) as f64;
        let mut chart = ChartBuilder::on(area)
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..epochs, self.y)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(self.name)
            .x_label_formatter(&|epoch| format!("{epoch:.0}"))
            .label_style(("sans-serif", 16))
            .draw()?;
        let metric = self.metric;
        let series: [(&str, RGBColor, Pick); 2] =
            [("train", BLUE, |r| &r.train), ("test", RED, |r| &r.test)];
        for (name, color, pick) in series {
            chart
                .draw_series(LineSeries::new(
                    history.iter().map(|r| (r.epoch as f64, metric(pick(r)))),
                    color.stroke_width(2),
                ))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 16))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(self.legend)
            .draw()?;
        Ok(())
    }
}

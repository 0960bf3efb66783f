//! The shape of a value per sample: features (rank 1), or channels × height × width (rank 3), or
//! anything of rank 1 to 3 between. Every dimension is known at compile time; the batch is not part
//! of it. A value is stored row-major as `batch × size` whatever its rank.

use std::fmt;

/// The most dimensions a value can have per sample.
pub const MAX_RANK: usize = 3;

/// A value's shape per sample: 1 to [`MAX_RANK`] dimensions, each at least 1, whose product fits
/// in `usize`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    dims: Vec<usize>,
    size: usize,
}

impl Shape {
    /// A shape of rank 1: `features` per sample.
    pub fn features(features: usize) -> Shape {
        Shape {
            dims: vec![features],
            size: features,
        }
    }

    /// A shape with these dimensions, or why there is none (no dimensions, too many, or more
    /// elements than `usize` holds).
    pub fn new(dims: &[usize]) -> Result<Shape, String> {
        if dims.is_empty() || dims.len() > MAX_RANK {
            return Err(format!(
                "a value has 1 to {MAX_RANK} dimensions per sample, not {}",
                dims.len()
            ));
        }
        let size = dims
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| {
                format!(
                    "{} would be more elements per sample than this machine can address",
                    Shape::display(dims)
                )
            })?;
        Ok(Shape {
            dims: dims.to_vec(),
            size,
        })
    }

    /// The dimensions, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// How many dimensions it has.
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Elements per sample: the product of the dimensions.
    pub fn size(&self) -> usize {
        self.size
    }

    /// How a message names a value of this shape: `50 features`, `1 feature`, `30×24×24`.
    pub fn describe(&self) -> String {
        match self.dims[..] {
            [1] => "1 feature".to_owned(),
            [n] => format!("{n} features"),
            _ => self.to_string(),
        }
    }

    /// What a message says a value of this shape is: `has 50 features`, `is 30×24×24`.
    pub fn is(&self) -> String {
        match self.dims[..] {
            [_] => format!("has {}", self.describe()),
            _ => format!("is {self}"),
        }
    }

    fn display(dims: &[usize]) -> String {
        dims.iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("×")
    }
}

impl fmt::Display for Shape {
    /// The dimensions joined by `×`, as people write them: `784`, `30×24×24`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&Shape::display(&self.dims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_print_as_people_write_them() {
        assert_eq!(Shape::new(&[30, 24, 24]).unwrap().to_string(), "30×24×24");
        assert_eq!(Shape::new(&[30, 24, 24]).unwrap().describe(), "30×24×24");
        assert_eq!(Shape::features(50).describe(), "50 features");
        assert_eq!(Shape::features(1).describe(), "1 feature");
        assert_eq!(Shape::new(&[1, 28, 28]).unwrap().size(), 784);
        assert_eq!(Shape::features(32).is(), "has 32 features");
        assert_eq!(Shape::new(&[2, 4, 4]).unwrap().is(), "is 2×4×4");
    }

    #[test]
    fn a_shape_has_one_to_three_dimensions_that_fit() {
        assert!(Shape::new(&[]).is_err());
        assert!(Shape::new(&[1, 2, 3, 4]).is_err());
        let huge = Shape::new(&[usize::MAX, 2]).unwrap_err();
        assert!(huge.contains("more elements per sample"), "{huge}");
    }
}

//! Mistakes collected across the stages and reported together.

/// Collected errors, reported together.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// Every mistake collected so far, if any.
    pub fn finish(&mut self) -> syn::Result<()> {
        self.0.take().map_or(Ok(()), Err)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

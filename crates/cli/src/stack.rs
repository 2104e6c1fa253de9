//! The layer stack as files and flags name it: `--net` text, the `--hidden`/`--activation` shorthand, and the metadata fields that record it.

use crate::CliError;
use manabi_layers::{Layer, Plan, PlanConfig, Shape, Spec, Training};
use std::collections::BTreeMap;

/// A network's layers on inputs of shape `input`: what a weights file or a checkpoint
/// records, and what the plans are built from.
#[derive(Clone, Debug, PartialEq)]
pub struct Stack {
    /// One sample's shape: flat rows unless a layer reads images (a convolution or a
    /// pooling layer), then `1 × rows × columns` for MNIST.
    pub input: Shape,
    /// The layers, input first.
    pub layers: Vec<Spec>,
}

/// The activation names of the MLP shorthand and of MLP files (`activation=relu`): the
/// layer's own name (`Spec`'s `Display`), for the two activations an MLP may have.
pub fn activation_name(a: Spec) -> Option<String> {
    matches!(a, Spec::Relu | Spec::Sigmoid).then(|| a.to_string())
}

/// The activation an MLP file or flag names (`Spec`'s `FromStr`, limited like
/// [`activation_name`]).
pub fn activation_from_name(name: &str) -> Option<Spec> {
    Spec::parse(name)
        .ok()
        .filter(|s| matches!(s, Spec::Relu | Spec::Sigmoid))
}

impl Stack {
    /// The book's `MultiLayerNet`: `input`, then an affine layer and `activation` for each
    /// hidden width, then an affine layer of `classes`.
    pub fn mlp(input: usize, hidden: &[usize], classes: usize, activation: Spec) -> Self {
        let mut widths = hidden.to_vec();
        widths.push(classes);
        Self {
            input: Shape::flat(input),
            layers: Spec::mlp(&widths, activation).collect(),
        }
    }

    /// Whether a layer reads its input as images (so the input keeps its image shape).
    pub fn reads_images(&self) -> bool {
        self.layers.iter().any(Spec::reads_images)
    }

    /// Values per input sample.
    pub fn input_len(&self) -> usize {
        self.input.len()
    }

    /// Reads `--net` text: layers separated by commas (`affine:100,batchnorm,relu,
    /// dropout:0.2,affine:10`, `conv:30@5x5,relu,maxpool:2x2,affine:100,relu,affine:10`) on
    /// samples of shape `input`, which stays an image shape only if a layer reads images.
    ///
    /// # Errors
    /// [`CliError::Usage`] naming the layer that does not parse.
    pub fn parse(input: Shape, text: &str) -> Result<Self, CliError> {
        let layers = text
            .split(',')
            .map(|t| {
                let t = t.trim();
                Spec::parse(t).map_err(|e| {
                    let why = match e {
                        manabi_tensor::Error::InvalidValue { what } => what.to_string(),
                        e => e.to_string(),
                    };
                    CliError::Usage(format!("--net: {t:?}: {why}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut stack = Self { input, layers };
        if !stack.reads_images() {
            stack.input = Shape::flat(input.len());
        }
        Ok(stack)
    }

    /// The `--net` text of the layers.
    pub fn text(&self) -> String {
        self.layers
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Layer widths (input first) and the activation, if the stack is an MLP: affine layers
    /// with one ReLU or Sigmoid between each pair and nothing else.
    pub fn as_mlp(&self) -> Option<(Vec<usize>, Spec)> {
        let mut sizes = vec![self.input.len()];
        let mut activation = None;
        for (i, spec) in self.layers.iter().enumerate() {
            match (i % 2, spec) {
                (0, Spec::Affine(w)) => sizes.push(*w),
                (1, a @ (Spec::Relu | Spec::Sigmoid)) if activation.is_none_or(|b| b == *a) => {
                    activation = Some(*a)
                }
                _ => return None,
            }
        }
        // An MLP ends with an affine layer; one layer alone has no activation (ReLU, as the
        // MLP files without one say).
        (self.layers.len() % 2 == 1).then(|| (sizes, activation.unwrap_or(Spec::Relu)))
    }

    /// What messages call the network: `784-50-10` for an MLP, else the `--net` text.
    pub fn short(&self) -> String {
        match self.as_mlp() {
            Some((sizes, _)) => sizes_text(&sizes),
            None => self.text(),
        }
    }

    /// What the training output calls the network: `784-50-10 relu` for an MLP, else the
    /// input width and the layers.
    pub fn describe(&self) -> String {
        match self.as_mlp() {
            Some((sizes, a)) => format!(
                "{} {}",
                sizes_text(&sizes),
                activation_name(a).unwrap_or_default()
            ),
            None => format!("{} -> {}", self.input, self.text()),
        }
    }

    /// The width of the last layer's output, which the classes must fit.
    pub fn outputs(&self) -> usize {
        let mut width = self.input.len();
        for spec in &self.layers {
            if let Spec::Affine(w) = spec {
                width = *w;
            }
        }
        width
    }

    /// Whether any layer draws random masks (so a run's Dropout generator is part of it).
    pub fn has_dropout(&self) -> bool {
        self.layers.iter().any(|s| matches!(s, Spec::Dropout(_)))
    }

    /// The plan for these layers.
    ///
    /// # Errors
    /// [`CliError::Plan`] for a stack the planner refuses.
    pub fn plan(
        &self,
        batch: usize,
        eval_batch: usize,
        training: Training,
    ) -> Result<Plan, CliError> {
        Ok(Plan::new(&PlanConfig {
            input: self.input,
            layers: &self.layers,
            batch,
            eval_batch,
            training,
        })?)
    }

    /// Learned parameters and running statistics, or `None` if the stack cannot be planned.
    pub fn sizes(&self) -> Option<(usize, usize)> {
        let plan = self.plan(1, 1, Training::Inference).ok()?;
        Some((plan.param_len(), plan.stats_len()))
    }

    /// Records the stack in metadata: an MLP as `sizes` and `activation` (the fields files
    /// had before other layers existed, so an MLP's file is unchanged), anything else as
    /// `input_shape` and `net`.
    pub fn write_fields(&self, f: &mut BTreeMap<&str, String>) {
        match self.as_mlp() {
            Some((sizes, a)) => {
                let text: Vec<String> = sizes.iter().map(|s| s.to_string()).collect();
                f.insert("sizes", text.join(","));
                f.insert(
                    "activation",
                    activation_name(a).unwrap_or_else(|| "relu".into()),
                );
            }
            None => {
                f.insert("input_shape", self.input.to_string());
                f.insert("net", self.text());
            }
        }
    }

    /// The stack recorded as `input_shape` and `net`, if the fields hold one.
    ///
    /// # Errors
    /// A [`CliError::BadFile`] naming `name` and the field that does not parse.
    pub fn from_net_fields(
        f: &BTreeMap<String, String>,
        name: &str,
    ) -> Result<Option<Self>, CliError> {
        let Some(net) = f.get("net") else {
            return Ok(None);
        };
        let bad = |key: &str, value: &str, why: String| {
            CliError::BadFile(format!("{name}: {key}={value:?} is invalid: {why}"))
        };
        let shape = f.get("input_shape").map(String::as_str).unwrap_or("");
        let input = parse_shape(shape).ok_or_else(|| {
            bad(
                "input_shape",
                shape,
                "expected a width or CxHxW, each in 1..=4294967295".into(),
            )
        })?;
        let layers = net
            .split(',')
            .map(|t| Spec::parse(t).map_err(|e| bad("net", net, format!("{t:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let stack = Self { input, layers };
        stack
            .plan(1, 1, Training::Inference)
            .map_err(|e| bad("net", net, e.to_string()))?;
        Ok(Some(stack))
    }
}

/// `784` (a flat row) or `1x28x28` (channels × rows × columns), as `Shape`'s `Display`.
pub fn parse_shape(text: &str) -> Option<Shape> {
    let dim = |t: &str| match t.parse::<u64>() {
        Ok(n) if n >= 1 && n <= u64::from(u32::MAX) => Some(n as usize),
        _ => None,
    };
    let parts: Vec<&str> = text.split('x').collect();
    let shape = match parts[..] {
        [n] => Shape::flat(dim(n)?),
        [c, h, w] => Shape::image(dim(c)?, dim(h)?, dim(w)?),
        _ => return None,
    };
    shape.checked_len().filter(|&n| n <= u32::MAX as usize)?;
    Some(shape)
}

/// The shape of one sample of `data`: `1 × rows × columns` for images, else a flat row.
pub fn data_shape(data: &manabi_data::Dataset) -> Shape {
    match data.image_dims() {
        [h, w] => Shape::image(1, *h, *w),
        _ => Shape::flat(data.features()),
    }
}

/// `784-50-10`.
pub fn sizes_text(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// The layers of a plan as specs (the inverse of planning them).
pub fn specs_of(plan: &Plan) -> Vec<Spec> {
    plan.layers().iter().map(Layer::spec).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlps_are_recognised_and_recorded_as_before() {
        let mlp = Stack::mlp(784, &[100, 50], 10, Spec::Sigmoid);
        assert_eq!(mlp.text(), "affine:100,sigmoid,affine:50,sigmoid,affine:10");
        assert_eq!(mlp.as_mlp(), Some((vec![784, 100, 50, 10], Spec::Sigmoid)));
        assert_eq!(mlp.describe(), "784-100-50-10 sigmoid");
        let mut f = BTreeMap::new();
        mlp.write_fields(&mut f);
        assert_eq!(f.get("sizes").map(String::as_str), Some("784,100,50,10"));
        assert_eq!(f.get("activation").map(String::as_str), Some("sigmoid"));
        assert!(!f.contains_key("net"));
        let one = Stack::parse(Shape::flat(4), "affine:3").unwrap();
        assert_eq!(one.as_mlp(), Some((vec![4, 3], Spec::Relu)));
    }

    #[test]
    fn other_stacks_are_recorded_as_net_text_and_read_back() {
        let net = Stack::parse(
            Shape::flat(784),
            "affine:100, batchnorm,relu,dropout:0.2,affine:10",
        )
        .unwrap();
        assert_eq!(net.as_mlp(), None);
        assert_eq!(net.outputs(), 10);
        assert!(net.has_dropout());
        for mixed in [
            "affine:5,relu,affine:4,sigmoid,affine:3",
            "affine:5,relu,relu",
        ] {
            assert_eq!(
                Stack::parse(Shape::flat(8), mixed).unwrap().as_mlp(),
                None,
                "{mixed}"
            );
        }
        let mut f = BTreeMap::new();
        net.write_fields(&mut f);
        let owned: BTreeMap<String, String> =
            f.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        assert_eq!(
            owned["net"],
            "affine:100,batchnorm,relu,dropout:0.2,affine:10"
        );
        assert_eq!(Stack::from_net_fields(&owned, "m").unwrap(), Some(net));
        let mut bad = owned.clone();
        bad.insert("net".into(), "affine:100,dropout:2".into());
        let e = Stack::from_net_fields(&bad, "m").unwrap_err().to_string();
        assert!(e.starts_with("m: net=") && e.contains("dropout:2"), "{e}");
        let e = Stack::parse(Shape::flat(784), "affine:100,convolution")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"convolution\"") && e.contains("unknown layer"),
            "{e}"
        );
    }
}

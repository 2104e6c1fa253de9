//! Data-parallel training steps: each batch split between this thread's network and a twin on a second thread, their gradients averaged by rows, then one optimizer step.
//!
//! A convolutional step is a few milliseconds of independent per-sample work, so two cores
//! halve it, as PyTorch's intra-op threads do. The twin is a second arena of the same plan;
//! before each step it receives the main network's parameters and a Dropout generator jumped
//! 2¹²⁸ draws past the main one ([`Rng::jump`](manabi_tensor::Rng::jump)), so a run depends
//! on its seed alone and a checkpoint of the main network resumes it exactly. After both
//! halves' backward passes the main network's gradient becomes
//! `(rows_a·g_a + rows_b·g_b) / rows`, the whole batch's mean gradient up to rounding (the
//! test at the bottom steps a [`Twin`] against one network on the whole batch), and the
//! optimizer steps once.
//!
//! BatchNorm normalises by its batch's statistics, which two halves would not share, so
//! stacks with it train on one network (see `setup::replicas`).

use crate::CliError;
use manabi_layers::{Input, Network, NoOptimizer, Target, Update};
use manabi_matmul::Gemm;
use manabi_optim::Optimizer;
use manabi_tensor::Real;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::Scope;

/// The twin's side: its network and the labels of its rows.
struct Half<'a, T> {
    net: Network<'a, T>,
    labels: Vec<usize>,
}

/// The main thread's handle on the twin.
pub struct Twin<'a, T> {
    half: Arc<Mutex<Half<'a, T>>>,
    /// Rows for the twin to train on (its input and labels already filled).
    jobs: mpsc::SyncSender<usize>,
    /// The twin's loss, once its gradients are written.
    done: mpsc::Receiver<T>,
    /// Backprop only (with the run's weight decay): the main half's update.
    grads: Update<'static, T, NoOptimizer>,
}

const STOPPED: CliError = CliError::Worker("the data-parallel thread stopped");

impl<'a, T: Real + Send> Twin<'a, T> {
    /// Starts the twin on `net` (an arena of the main network's plan), stepping with backprop
    /// only and weight decay `decay`.
    ///
    /// # Errors
    /// A plan without a gradient buffer.
    pub fn spawn<'scope, G: Gemm<T> + Sync>(
        scope: &'scope Scope<'scope, '_>,
        net: Network<'a, T>,
        mm: &'a G,
        decay: T,
    ) -> Result<Self, CliError>
    where
        'a: 'scope,
    {
        let grads = Update::gradients(net.plan())?.with_weight_decay(decay)?;
        let labels = vec![0; net.plan().batch()];
        let half = Arc::new(Mutex::new(Half { net, labels }));
        let (jobs, job_rx) = mpsc::sync_channel::<usize>(1);
        let (done_tx, done) = mpsc::sync_channel::<T>(1);
        let theirs = Arc::clone(&half);
        scope.spawn(move || {
            let mut update = grads;
            for rows in job_rx {
                let Ok(mut h) = theirs.lock() else { return };
                let Half { net, labels } = &mut *h;
                let target = Target::Labels(&labels[..rows]);
                let loss = net.train_step(mm, Input::Arena(rows), target, &mut update);
                drop(h);
                if done_tx.send(loss).is_err() {
                    return;
                }
            }
        });
        Ok(Self {
            half,
            jobs,
            done,
            grads,
        })
    }

    /// One step of `net` on the batch `x` (`labels.len()` rows): the first half here, the
    /// rest on the twin, the gradients averaged, then `update`'s optimizer step. Returns the
    /// batch's mean loss (the rows-weighted mean of the halves').
    ///
    /// # Errors
    /// If the twin's thread stopped, or `update` has no optimizer.
    pub fn step<G: Gemm<T>, O: Optimizer<T>>(
        &mut self,
        net: &mut Network<'_, T>,
        mm: &G,
        x: &[T],
        labels: &[usize],
        update: &mut Update<'_, T, O>,
    ) -> Result<T, CliError> {
        let rows = labels.len();
        let d_in = net.plan().d_in();
        let ours = rows.div_ceil(2);
        let theirs = rows - ours;
        if theirs > 0 {
            let mut h = self.half.lock().map_err(|_| STOPPED)?;
            h.net
                .input_mut(theirs)
                .copy_from_slice(&x[ours * d_in..rows * d_in]);
            h.labels[..theirs].copy_from_slice(&labels[ours..]);
            h.net.params_mut().copy_from_slice(net.params());
            let mut rng = net.rng().clone();
            rng.jump();
            h.net.set_rng(rng);
            drop(h);
            self.jobs.send(theirs).map_err(|_| STOPPED)?;
        }
        let input = Input::Dense(&x[..ours * d_in]);
        let loss = net.train_step(mm, input, Target::Labels(&labels[..ours]), &mut self.grads);
        let loss = if theirs > 0 {
            let their_loss = self.done.recv().map_err(|_| STOPPED)?;
            let h = self.half.lock().map_err(|_| STOPPED)?;
            let n = T::from_usize(rows);
            let (wa, wb) = (T::from_usize(ours) / n, T::from_usize(theirs) / n);
            for (g, &h) in net.grads_mut().iter_mut().zip(h.net.grads()) {
                *g = wa * *g + wb * h;
            }
            wa * loss + wb * their_loss
        } else {
            loss
        };
        net.optimizer_step(update)?;
        Ok(loss)
    }
}

#[cfg(test)]
mod tests {
    use super::Twin;
    use manabi_layers::{
        Init, Input, Network, Plan, PlanConfig, Shape, Spec, Target, Training, Update,
    };
    use manabi_matmul::Naive;
    use manabi_optim::Adam;
    use manabi_tensor::Rng;

    /// SimpleConvNet's shape, small: conv 3@3×3 (pad 1), ReLU, max-pool 2×2, affine 6, ReLU,
    /// affine 3, on 2×6×6 images.
    const LAYERS: [Spec; 6] = [
        Spec::Conv2d {
            filters: 3,
            kh: 3,
            kw: 3,
            stride: 1,
            pad: 1,
        },
        Spec::Relu,
        Spec::MaxPool2d {
            kh: 2,
            kw: 2,
            stride: 2,
        },
        Spec::Affine(6),
        Spec::Relu,
        Spec::Affine(3),
    ];
    const D_IN: usize = 2 * 6 * 6;
    const BATCH: usize = 8;

    fn plan() -> Plan {
        Plan::new(&PlanConfig {
            input: Shape::image(2, 6, 6),
            layers: &LAYERS,
            batch: BATCH,
            eval_batch: BATCH,
            training: Training::Backprop { optimizer_slots: 2 },
        })
        .unwrap()
    }

    /// The twin's step (half the rows here, the rest on the second thread, gradients
    /// averaged by rows, one Adam step with weight decay) against one network stepping on the
    /// whole batch, on batches of 8, 7 (split 4 + 3) and 1 row (nothing for the twin).
    #[test]
    fn the_two_replica_step_is_the_whole_batch_step_to_rounding() {
        let plan = plan();
        let mut arenas = [0, 1, 2].map(|_| vec![0.0f64; plan.total()]);
        let [whole, main, twin] = &mut arenas;
        let mut whole = Network::new(&plan, whole).unwrap();
        whole.init(Init::He, &mut Rng::new(5));
        let mut main = Network::new(&plan, main).unwrap();
        main.params_mut().copy_from_slice(whole.params());
        let twin = Network::new(&plan, twin).unwrap();
        let (adam, decay) = (Adam::new(1e-2), 0.01);
        let update = |plan: &Plan| {
            Update::optimizer(plan, &adam, 1)
                .unwrap()
                .with_weight_decay(decay)
                .unwrap()
        };
        let (mut whole_update, mut split_update) = (update(&plan), update(&plan));
        let mut rng = Rng::new(23);
        std::thread::scope(|scope| {
            let mut twin = Twin::spawn(scope, twin, &Naive, decay).unwrap();
            for rows in [8, 7, 1, 8, 7] {
                let x: Vec<f64> = (0..rows * D_IN).map(|_| rng.range(-1.0, 1.0)).collect();
                let labels: Vec<usize> = (0..rows).map(|_| rng.below(3)).collect();
                let before = main.params().to_vec();
                let loss = whole.train_step(
                    &Naive,
                    Input::Dense(&x),
                    Target::Labels(&labels),
                    &mut whole_update,
                );
                let split = twin
                    .step(&mut main, &Naive, &x, &labels, &mut split_update)
                    .unwrap();
                assert!(
                    (split - loss).abs() <= 1e-13 * loss.abs(),
                    "{rows} rows: loss {split} against {loss}"
                );
                for (i, (p, q)) in main.params().iter().zip(whole.params()).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-13,
                        "{rows} rows: parameter {i}: {p} against {q}"
                    );
                }
                assert_ne!(main.params(), &before[..], "the step moved the parameters");
            }
        });
        assert_eq!(split_update.t(), whole_update.t());
    }
}

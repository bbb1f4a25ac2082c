"""The cross-modal probabilistic VAE: generates the text's anchor distribution from the video's.

The paper's VAE (`posterior: video`): q(z | V_p) = N(mu, sigma^2) in d dimensions, pulled to
N(0, I) by the KL term; the decoder maps z to logits over the K anchors. sigma is meant to be the
per-video uncertainty, but nothing in that objective makes it depend on how many captions fit a
video: the encoder sees V_p alone and the KL pulls every posterior to the same N(0, I)
(docs/method.md, "Uncertainty").

The conditional VAE (`posterior: conditional`) gives the spread that job: in training the
posterior q(z | V_p, S_p) sees the caption's distribution, and a learned prior p(z | V_p) is
matched to it by KL(q || p); at test time there is no caption, so the prior generates, and its
spread must cover every caption the video admits.

Either way `encode(V_p)` is the distribution over z that generates at test time (the paper's
posterior, or the conditional VAE's prior); what the VAE generates for a video is the predictive
distribution E_z[S_p-hat(z)] over it (`predictive`); `forward` in eval mode decodes its mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from calm.config.schema import VAEConfig

PREDICTIVE_SAMPLES = 32  # draws of z behind the predictive distribution (`predictive`)
ACTIVE_VARIANCE = 0.01  # a latent dimension is active when its mean varies more than this over videos
ACTIVITY_MOMENTUM = 0.99  # the running variance of the test-time mean over training batches


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


@dataclass
class VAEOutput:
    mu: torch.Tensor  # [N, d] the posterior z is drawn from in training
    logvar: torch.Tensor  # [N, d]
    z: torch.Tensor  # [N, d]
    logits: torch.Tensor  # [N, K] decoder output; softmax gives S_p-hat
    prior_mu: torch.Tensor | None = None  # [N, d] the learned prior p(z | V_p); None: N(0, I)
    prior_logvar: torch.Tensor | None = None

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(dim=-1)

    @property
    def generating_mu(self) -> torch.Tensor:
        """The mean of the distribution that generates at test time: the prior's when there is
        one, else the posterior's."""
        return self.mu if self.prior_mu is None else self.prior_mu

    def kl_per_dimension(self) -> torch.Tensor:
        """KL(q || p) per sample and latent dimension [N, d]: to the learned prior, or N(0, I)."""
        return kl_per_dimension(self.mu, self.logvar, self.prior_mu, self.prior_logvar)

    @property
    def uncertainty(self) -> torch.Tensor:
        """Per-sample mean sigma over the latent dimensions."""
        return (0.5 * self.logvar).exp().mean(dim=-1)


class CrossModalVAE(nn.Module):
    def __init__(self, num_anchors: int, cfg: VAEConfig):
        super().__init__()
        self.latent_dim = cfg.latent_dim
        self.conditional = cfg.posterior == "conditional"
        self.input_temperature = float(cfg.input_temperature)
        # on V_p: the paper's posterior q(z | V_p), or the conditional VAE's prior p(z | V_p)
        self.encoder = mlp([num_anchors, *cfg.encoder_hidden, 2 * cfg.latent_dim])
        # the conditional VAE's training posterior q(z | V_p, S_p)
        self.posterior = (mlp([2 * num_anchors, *cfg.encoder_hidden, 2 * cfg.latent_dim])
                          if self.conditional else None)
        self.decoder = mlp([cfg.latent_dim, *cfg.decoder_hidden, num_anchors])
        # running variance, over training batches, of the generating mean per latent dimension:
        # which dimensions are active, measured on training data (never on the split evaluated)
        self.register_buffer("latent_activity", torch.zeros(cfg.latent_dim))
        self.register_buffer("activity_steps", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before the activity statistics load without them (all dims active)
        for name in ("latent_activity", "activity_steps"):
            state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def input_probs(self, video_logits: torch.Tensor) -> torch.Tensor:
        """The VAE's input: V_p at the VAE's own temperature (1 = V_p itself; > 1 softer)."""
        return (video_logits / self.input_temperature).softmax(dim=-1)

    @staticmethod
    def _split(params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = params.chunk(2, dim=-1)
        return mu, logvar.clamp(-30.0, 20.0)

    def encode(self, video_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The distribution over z that generates at test time (mu, logvar [N, d])."""
        return self._split(self.encoder(video_probs))

    def forward(self, video_probs: torch.Tensor, text_probs: torch.Tensor | None = None,
                sample: bool | None = None) -> VAEOutput:
        """Samples z by reparameterisation in training mode; uses z = mu in eval mode.

        The conditional VAE draws z from q(z | V_p, S_p) when `text_probs` (S_p, detached by the
        caller) is given, and reports its prior p(z | V_p) beside it for the KL; without a text
        (test time) it draws from the prior."""
        mu, logvar = self.encode(video_probs)
        prior_mu = prior_logvar = None
        if self.conditional and text_probs is not None:
            prior_mu, prior_logvar = mu, logvar
            mu, logvar = self._split(self.posterior(torch.cat([video_probs, text_probs], dim=-1)))
        sample = self.training if sample is None else sample
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if sample else mu
        return VAEOutput(mu, logvar, z, self.decoder(z), prior_mu, prior_logvar)

    @torch.no_grad()
    def observe(self, out: VAEOutput) -> None:
        """After a training step: the batch's variance of the generating mean joins the running
        activity of each latent dimension."""
        mu = out.generating_mu.detach().float()
        if mu.shape[0] < 2:
            return
        batch_var = mu.var(dim=0)
        if int(self.activity_steps) == 0:
            self.latent_activity.copy_(batch_var)
        else:
            self.latent_activity.mul_(ACTIVITY_MOMENTUM).add_((1 - ACTIVITY_MOMENTUM) * batch_var)
        self.activity_steps += 1

    def active_dimensions(self) -> torch.Tensor:
        """Bool [d]: the dimensions whose generating mean varied over training videos (running
        variance > ACTIVE_VARIANCE). A model never trained with the statistics (an old
        checkpoint) counts every dimension, and so does one where none passed."""
        if int(self.activity_steps) == 0:
            return torch.ones(self.latent_dim, dtype=torch.bool, device=self.latent_activity.device)
        active = self.latent_activity > ACTIVE_VARIANCE
        return active if bool(active.any()) else torch.ones_like(active)

    def predictive(self, video_probs: torch.Tensor, samples: int = PREDICTIVE_SAMPLES,
                   seed: int = 0) -> torch.Tensor:
        """What the VAE generates for a video: E_{z ~ q(z | V_p)}[S_p-hat(z)], [N, K], estimated
        with `samples` draws of z (for the conditional VAE z ~ p(z | V_p), its prior). The
        standard-normal draws come from a fixed seed and are the same for every row, so a
        video's generation depends on that video alone: not on the batch it is in or its
        position there, and not on the call.

        The decoder is trained on sampled z, so this is the distribution it learned to produce.
        Decoding z = mu alone is not: measured on the synthetic benchmark, the paper's setting
        reconstructs S_p at 3.09 nats with the predictive and 3.50 at z = mu, worse than always
        predicting the training marginal (3.25) (docs/method.md, "Reading the VAE").
        """
        return self.predictive_from(*self.encode(video_probs), samples=samples, seed=seed)

    def predictive_draws(self, mu: torch.Tensor, logvar: torch.Tensor,
                         samples: int = PREDICTIVE_SAMPLES, seed: int = 0) -> torch.Tensor:
        """S_p-hat(z) for each of the shared draws of z, [samples, N, K]: the predictive is
        their mean, the mutual information between S_p-hat and z their spread."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        eps = torch.randn((samples, 1, mu.shape[-1]), generator=generator).to(mu)
        z = mu + (0.5 * logvar).exp() * eps
        return self.decoder(z).softmax(dim=-1)

    def predictive_from(self, mu: torch.Tensor, logvar: torch.Tensor,
                        samples: int = PREDICTIVE_SAMPLES, seed: int = 0) -> torch.Tensor:
        """`predictive` for a distribution already encoded (mu, logvar [N, d])."""
        return self.predictive_draws(mu, logvar, samples, seed).mean(dim=0)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor | None = None,
                     prior_logvar: torch.Tensor | None = None) -> torch.Tensor:
    """KL(N(mu_d, sigma_d^2) || N(m_d, s_d^2)) per sample and latent dimension, [N, d], in
    closed form; without a prior (m, s) the standard normal N(0, 1)."""
    if prior_mu is None:
        return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)
    return 0.5 * (prior_logvar - logvar
                  + (logvar.exp() + (mu - prior_mu).pow(2)) / prior_logvar.exp() - 1.0)


def kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per sample, summed over latent dimensions."""
    return kl_per_dimension(mu, logvar).sum(dim=-1)

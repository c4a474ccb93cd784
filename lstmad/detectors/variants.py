"""Profiles and ablation switches of the IAE-LSTM-KL detector, as plain data (no torch import), so that
configuration can validate them cheaply."""

PROFILES = {
    # as published for 26×26 WTBI windows: Conv(1→32→64→128, k5), LSTM(2048, 2048), Linear(2048, 128)
    "paper": dict(conv_channels=(32, 64, 128), latent=128, lstm_hidden=2048),
    # trains in minutes on 2 CPU cores
    "small": dict(conv_channels=(8, 16, 32), latent=32, lstm_hidden=128),
}

# The paper's models as switches of this one implementation (Tables III and V).
VARIANTS = {
    "cae": dict(svdd="none", use_lstm=False, kl_weight=0.0, rec_weight=1.0),
    "deep_svdd_soft": dict(svdd="soft", use_lstm=False, kl_weight=0.0, rec_weight=0.0, bias=False),
    "deep_svdd_hard": dict(svdd="hard", use_lstm=False, kl_weight=0.0, rec_weight=0.0, bias=False),
    "iaead_soft": dict(svdd="soft", use_lstm=False, kl_weight=0.0),
    "iaead_hard": dict(svdd="hard", use_lstm=False, kl_weight=0.0),
    "iae_kl": dict(svdd="soft", use_lstm=False),
    "iae_lstm": dict(svdd="soft", use_lstm=True, kl_weight=0.0),
    "dlsvdd": dict(svdd="soft", use_lstm=True, kl_weight=0.0, rec_weight=0.0, bias=False),
    "dlsvdd_kl": dict(svdd="soft", use_lstm=True, rec_weight=0.0, bias=False),
    "dsvdd_kl": dict(svdd="soft", use_lstm=False, rec_weight=0.0, bias=False),
    "iae_lstm_kl_soft": dict(svdd="soft", use_lstm=True),
    "iae_lstm_kl_hard": dict(svdd="hard", use_lstm=True),
}

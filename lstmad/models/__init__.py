"""Plain torch.nn.Module networks (forward only); detectors in lstmad.detectors train and score them."""

"""surf_mini: a reference implementation of SURF and everything it stands on.

SURF (Separation via Unsupervised Remixing Flow), FLOSS (flow matching for separation),
MixIT, ReMixIT and Self-Remixing. One module per concept:

    flow.py    start state, path, time weighting, losses, PIT at t = 0, Euler sampler (FLOSS)
    pit.py     permutation invariant training: best arrangement of references
    remix.py   batch shuffle Pi, remixed mixtures, ReMixIT / Self-Remixing / SURF losses
    mixit.py   MixIT loss, mixture consistency, mixtures of mixtures
    ema.py     EMA teacher, beta schedule, hybrid MixIT/flow teacher sampler
    ncsn.py    NCSN-style U-Net: equivariant velocity network and regression separator (images)

The math is in docs/math.md (with the papers' equation numbers); every function cites the
equation it implements.
"""
__version__ = "0.1.0"

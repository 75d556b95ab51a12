"""The model of §2: the activations σ (:mod:`~hdlora.model.activations`), the teacher, the data
of eq. (6) and the centring of eq. (34) (:mod:`~hdlora.model.data`), the attention of eq. (1)
and the objectives (2)–(3) (:mod:`~hdlora.model.losses`). Torch (the simulator) and numpy (the
theory) both use σ."""

"""The harness around the model, simulation and theory: run profiles
(:mod:`~hdlora.harness.profiles`), output folders and atomic writes (:mod:`~hdlora.harness.io`),
cached tables over points
(:mod:`~hdlora.harness.tables`) and the simulation-versus-theory agreement check
(:mod:`~hdlora.harness.agreement`)."""

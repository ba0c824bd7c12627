"""Command lines of the experiments: ``python -m balf_paper.experiments EXPERIMENT`` (:mod:`.main`),
options with YAML defaults (:mod:`.options`) and each experiment's plan of sweeps (:mod:`.image`,
:mod:`.calib_shift`, :mod:`.language`)."""

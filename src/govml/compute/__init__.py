"""Scale-out: hyperparameter trials on Ray, batch scoring of large files (docs/scale.md).

Nothing here imports Ray until the ``ray`` engine is asked for: ``local`` needs no Ray.
Import from the submodules (``govml.compute.scoring``, ``govml.compute.trials``): the
package itself stays light so that ``govml --help`` does not load MLflow.
"""

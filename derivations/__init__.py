"""Transcriptions of hand-derived backward passes, one module per derivation.

The seed's four (conv2d, linear, maxpool2d, softmax_ce) are each transcribed as written
and as a corrected reference; dense_layer, dot_attention and lstm_cell show the forms for
real layer code. Every module here is loaded by ``python cli.py check`` and by
``pytest --gradcheck``.

Declaring a new derivation (copy the closest module, then edit):

1. A module ``derivations/<name>.py`` whose docstring carries the derivation: the forward,
   then the chain rule down to each gradient, with the reading of any ambiguous notation.
2. A forward and a hypothesis strategy of cases: dicts of keyword arguments, float arrays
   from ``gradcheck.strategies`` (``float_arrays`` for awkward values, ``spaced_arrays``
   to keep values apart and off kinks, ``windows`` for conv/pool geometry with padding and
   dilation, ``index_arrays`` for ids with repeats) and static parameters (a stride).
   Add ``classify(case)`` naming the case's geometry class (coverage counts).
3. Declare it in the form the code already has, and write each formula on one line:

   * a function, one formula per argument (linear.py)::

         d = Derivation("name", forward, cases=cases(), classify=classify, source="...")
         d.formula("x", lambda dy, W, x, b: W.T @ dy, text="dL/dx = W^T dL/dy")

   * one backward for several arguments, ``backward(dy, **case) -> (dq, dk, dv)`` or a
     dict by name; each argument is its own formula (dot_attention.py)::

         d.backward(("q", "k", "v"), backward)

   * several outputs: the forward returns ``(h, c)`` (or a dict), the backward gets
     ``dy = (dh, dc)`` (lstm_cell.py)::

         d = Derivation("name", forward, cases=cases(), outputs=("h", "c"))

   * a layer object: built from the case's other entries, parameters set by path, the
     backward run on the object after its forward (dense_layer.py)::

         d = Layer("name", Dense, cases=cases(), inputs="x", reusable=True,
                   params={"weight": "params.weight", "bias": "params.bias"})
         d.backward(("x", "weight", "bias"),
                    lambda layer, dy: (layer.backward(dy), layer.grads["weight"], ...))

4. ``variant="as-written"`` for a transcription as found (``"reference"`` is the default,
   for a corrected one) and ``expect="fail"`` (or ``"nonsmooth"``) where that is the known
   outcome: the run then reports a mismatch only when the outcome changes.
5. ``python cli.py check name`` (``explain 'name.dx[as-written]'`` for a failure). A
   catalogue module's as-written verdicts go into docs/findings.md, which
   tests/test_catalogue.py reads; keep its cases small, as the CLI's run covers them all.
"""

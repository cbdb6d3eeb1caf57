"""Behavioural anomaly scoring: the ``behaviour_anomaly`` indicator.

Rules catch sessions used where policy forbids; this package catches sessions
used *unlike their user*. :mod:`~detector.anomaly.features` turns each session
step into a row of departures from the user's own baseline, a model scores the
row (:mod:`~detector.anomaly.offline`: a frozen scikit-learn forest from
``models/``; :mod:`~detector.anomaly.online`: river, learning live), and
:mod:`~detector.anomaly.scoring` batches the rows so the engine pays the models'
overhead once per batch, not once per request.
"""

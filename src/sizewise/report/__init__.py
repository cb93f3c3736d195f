"""Reports rendered from result JSON files only: tables, significance tests, plots.

:mod:`.render` writes a run folder's report (``write_report``) and reads its results
(``load_results``); :mod:`.document` holds the blocks a report is made of, which arm types add to.
"""

"""Clinical diary analyses for people and their clinicians (docs/architecture.md, serving).

Pure functions over contract tables (``migrainemamba.data.schema``): the monthly
summary (migraine, headache and acute-medication days), the ICHD-3
medication-overuse check, preventive before/after, MIDAS and HIT-6 scoring,
and the clinician report (HTML and PDF). Nothing here imports the service; the
service imports this package.
"""

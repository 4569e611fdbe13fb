"""Related methods beside E3Outlier: CSI and CSI with synthetic contrast, UniCon-HA, ADIB/ADRA and ELITE."""

"""The processor: SWarp mosaics, HiPS and previews of accepted uploads."""

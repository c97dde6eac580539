"""Readers and writers for DICOM, NIfTI and MedMNIST files."""

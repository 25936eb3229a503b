"""Volume IO: read CT volumes (NRRD, NIfTI, MHA, DICOM), validate them, write them atomically."""

from .atomic import atomic_output, atomic_output_dir, atomic_write_bytes, atomic_write_text  # noqa: F401
from .dicom import META_TAGS, list_series  # noqa: F401
from .read import file_format, read_volume  # noqa: F401
from .sitk_volume import image_to_volume  # noqa: F401
from .validate import hu_summary, validate_ct  # noqa: F401
from .write import volume_to_image, write_volume  # noqa: F401

"""VOC devkit xml: 1-based inclusive pixel boxes -> 0-based continuous, difficult flags."""
import pytest

from resdet.data import DatasetCatalog, MetadataCatalog, register_voc
from resdet.data.datasets.voc import parse_voc_xml

XML = """<annotation><folder>VOC2007</folder><filename>000005.jpg</filename>
<size><width>500</width><height>375</height><depth>3</depth></size>
<object><name>chair</name><pose>Rear</pose><truncated>0</truncated><difficult>0</difficult>
<bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox></object>
<object><name>dog</name><difficult>1</difficult>
<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>500</xmax><ymax>375</ymax></bndbox></object>
</annotation>"""


@pytest.fixture
def voc_dir(tmp_path):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / "VOC2007" / sub).mkdir(parents=True)
    (tmp_path / "VOC2007/Annotations/000005.xml").write_text(XML)
    (tmp_path / "VOC2007/ImageSets/Main/val.txt").write_text("000005\n")
    return tmp_path / "VOC2007"


def test_one_based_to_zero_based_and_difficult(voc_dir):
    record = parse_voc_xml(str(voc_dir / "Annotations/000005.xml"), ["chair", "dog"])
    assert (record["height"], record["width"]) == (375, 500)
    # pixel 263 (1-based) spans [262, 263); the inclusive box 263..324 spans [262, 324]
    assert [a["bbox"] for a in record["annotations"]] == [[262, 210, 324, 339], [0, 0, 500, 375]]
    assert [a["difficult"] for a in record["annotations"]] == [False, True]
    assert [a["category_id"] for a in record["annotations"]] == [0, 1]


def test_register_voc_and_unknown_class(voc_dir):
    register_voc("test_voc_handmade", str(voc_dir), "val", ["chair", "dog"])
    (record,) = DatasetCatalog.get("test_voc_handmade")
    assert record["image_id"] == "000005" and record["file_name"].endswith("JPEGImages/000005.jpg")
    meta = MetadataCatalog.get("test_voc_handmade")
    assert (meta.evaluator_type, meta.split, meta.year, meta.thing_classes) == ("voc", "val", 2007, ["chair", "dog"])
    with pytest.raises(ValueError, match="000005.xml.*'dog'"):
        parse_voc_xml(str(voc_dir / "Annotations/000005.xml"), ["chair"])

"""FCBoxHead on the pooler's channels-last inference output equals it on contiguous features."""
import torch

from resdet.modeling.detector.box_head import FCBoxHead


def test_channels_last_features_give_the_same_box_features():
    torch.manual_seed(0)
    head = FCBoxHead(in_channels=6, resolution=3, num_fc=2, fc_dim=16)
    x = torch.randn(5, 6, 3, 3)
    last = x.contiguous(memory_format=torch.channels_last)
    assert not last.is_contiguous()
    expected = head(x)
    with torch.no_grad():
        torch.testing.assert_close(head(last), expected, atol=1e-6, rtol=1e-5)
        head.fc1.weight.mul_(2.0)  # the cached permuted weight follows in-place updates
        torch.testing.assert_close(head(last), head(x), atol=1e-6, rtol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(head(last).float(), head(x).float(), atol=0.05, rtol=0.05)
    torch.testing.assert_close(head(last), head(x), atol=1e-6, rtol=1e-5)  # with gradients: flattened as it is
